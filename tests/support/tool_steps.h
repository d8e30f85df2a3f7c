// Running the command-line tools a test environment is built with (openssl, kmsctl, the
// development IdP), and the two pieces every daemon test needs from them: a throwaway CA with a
// TLS certificate for 127.0.0.1, and a development IdP per organization.
//
//   ToolSteps steps;
//   MakeTestTls(steps, dir, "Strongroom cored test CA");   // dir/ca.pem, dir/tls.pem, dir/tls.key
//   InitTestIdps(steps, dir, IDP_PATH, {"acme", "globex"});  // dir/idp-acme, dir/idp-globex
//   if (!steps.error().empty()) ...                          // the first failure, with its stderr
#ifndef STRONGROOM_TESTS_SUPPORT_TOOL_STEPS_H_
#define STRONGROOM_TESTS_SUPPORT_TOOL_STEPS_H_

#include <Poco/Exception.h>
#include <Poco/PipeStream.h>
#include <Poco/Process.h>
#include <Poco/StreamCopier.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace strongroom::testing {

struct ToolRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs a tool to completion with `env` added to the environment; its stdout and stderr are kept.
inline ToolRun Tool(const std::string& path, const std::vector<std::string>& args,
                    const Poco::Process::Env& env = {}) {
  Poco::Pipe out_pipe, err_pipe;
  ToolRun run;
  try {
    Poco::ProcessHandle handle =
        Poco::Process::launch(path, args, ".", nullptr, &out_pipe, &err_pipe, env);
    Poco::PipeInputStream out_stream(out_pipe), err_stream(err_pipe);
    std::thread err_reader([&] { Poco::StreamCopier::copyToString(err_stream, run.err); });
    Poco::StreamCopier::copyToString(out_stream, run.out);
    err_reader.join();
    run.exit_code = handle.wait();
  } catch (const Poco::Exception& e) {
    run.err = e.displayText();
  }
  return run;
}

// Tool runs that stop at the first failure: later Run()s do nothing, error() names it.
class ToolSteps {
 public:
  void Run(const std::string& tool, const std::vector<std::string>& args,
           const Poco::Process::Env& env = {}) {
    if (!error_.empty()) return;
    const ToolRun run = Tool(tool, args, env);
    if (run.exit_code != 0) error_ = tool + " " + args.at(0) + " failed: " + run.err;
  }
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

// A throwaway P-256 CA named `ca_name` (dir/ca.pem, dir/ca.key, valid two days) and a TLS server
// certificate it signed for IP 127.0.0.1 and DNS localhost (dir/tls.pem, dir/tls.key).
inline void MakeTestTls(ToolSteps& steps, const std::string& dir, const std::string& ca_name) {
  std::ofstream(std::filesystem::path(dir) / "server.ext")
      << "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
         "basicConstraints = critical, CA:FALSE\n"
         "keyUsage = critical, digitalSignature\n"
         "extendedKeyUsage = serverAuth\n";
  steps.Run(
      "/usr/bin/openssl",
      {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
       dir + "/ca.key", "-out", dir + "/ca.pem", "-days", "2", "-subj", "/CN=" + ca_name, "-addext",
       "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"});
  steps.Run("/usr/bin/openssl",
            {"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             dir + "/tls.key", "-out", dir + "/tls.csr", "-subj", "/CN=127.0.0.1"});
  steps.Run("/usr/bin/openssl", {"x509", "-req", "-in", dir + "/tls.csr", "-CA", dir + "/ca.pem",
                                 "-CAkey", dir + "/ca.key", "-CAcreateserial", "-days", "2",
                                 "-extfile", dir + "/server.ext", "-out", dir + "/tls.pem"});
}

// A development IdP per organization: dir/idp-<org>, issuer https://idp.<org>.test.
inline void InitTestIdps(ToolSteps& steps, const std::string& dir, const std::string& idp_path,
                         const std::vector<std::string>& orgs) {
  for (const std::string& org : orgs) {
    steps.Run(idp_path,
              {"init", "--dir", dir + "/idp-" + org, "--issuer", "https://idp." + org + ".test"});
  }
}

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_TOOL_STEPS_H_
