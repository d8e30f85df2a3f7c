// A program that links strongroom::hsm and nothing else, with every shared library of that link
// line kept (--no-as-needed): its NEEDED entries are what the HSM layer brings into any program
// that links it (tests/hsm/link_test.cc).
#include "strongroom/hsm/token_uri.h"

int main(int argc, char** argv) {
  return argc > 1 && !strongroom::hsm::TokenUri::Parse(argv[1]).ok() ? 1 : 0;
}
