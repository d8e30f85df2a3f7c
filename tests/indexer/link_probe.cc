// A program that links strongroom::indexer_text and nothing else, with every shared library of
// that link line kept (--no-as-needed): its NEEDED entries are what the indexer's text library
// brings into any program that links it (tests/indexer/link_test.cc).
#include "strongroom/indexer/term_extractor.h"

int main(int argc, char** argv) {
  auto extractor = strongroom::indexer::TermExtractor::New();
  return extractor.ok() && argc > 1 && !extractor->Extract(argv[1]).ok() ? 1 : 0;
}
