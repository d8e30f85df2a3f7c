// Several processes started at the same moment, as several nodes (kmsd, cored) opening or writing
// one database at once: RunProcessesTogether(n, child) forks n copies of the test program, which
// wait on a pipe until the parent has forked them all and closes it, then run child(i) and leave
// with _exit (0 when it returned true; the parent's destructors do not run in them). It returns how
// many succeeded. A child must open what it uses itself (a Database of its own): connections of
// the parent's are not carried across fork.
#ifndef STRONGROOM_TESTS_SUPPORT_PROCESSES_TOGETHER_H_
#define STRONGROOM_TESTS_SUPPORT_PROCESSES_TOGETHER_H_

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <vector>

namespace strongroom::testing {

inline int RunProcessesTogether(int n, const std::function<bool(int)>& child) {
  int start[2];
  if (::pipe(start) != 0) return 0;
  std::vector<pid_t> children;
  for (int i = 0; i < n; ++i) {
    const pid_t pid = ::fork();
    if (pid < 0) break;
    if (pid == 0) {
      ::close(start[1]);
      char go;
      (void)!::read(start[0], &go, 1);  // returns at EOF: the parent closed its end
      const bool ok = child(i);
      std::fflush(stderr);
      ::_exit(ok ? 0 : 1);
    }
    children.push_back(pid);
  }
  ::close(start[0]);
  ::close(start[1]);  // all at once
  int succeeded = 0;
  for (const pid_t pid : children) {
    int wstatus = 0;
    if (::waitpid(pid, &wstatus, 0) == pid && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
      ++succeeded;
    }
  }
  return succeeded;
}

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_PROCESSES_TOGETHER_H_
