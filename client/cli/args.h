// The command line's arguments, taken out one by one (options, flags, then the positional ones),
// and the error a command throws when they are wrong (exit status 64, EX_USAGE).
#ifndef STRONGROOM_CLIENT_CLI_ARGS_H_
#define STRONGROOM_CLIENT_CLI_ARGS_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace strongroom::cli {

class UsageError {
 public:
  explicit UsageError(std::string message) : message_(std::move(message)) {}
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

class Args {
 public:
  Args(std::vector<std::string> args) : args_(std::move(args)) {}  // NOLINT

  // Takes `--name VALUE` out of the arguments.
  std::optional<std::string> Option(const std::string& name) {
    for (std::size_t i = 0; i < args_.size(); ++i) {
      if (args_[i] == name) {
        if (i + 1 >= args_.size()) throw UsageError(name + " needs a value");
        std::string value = args_[i + 1];
        args_.erase(args_.begin() + static_cast<long>(i), args_.begin() + static_cast<long>(i) + 2);
        return value;
      }
    }
    return std::nullopt;
  }
  // Takes `--name V1 V2 ...` (up to the next --option).
  std::vector<std::string> Options(const std::string& name) {
    std::vector<std::string> values;
    for (std::size_t i = 0; i < args_.size(); ++i) {
      if (args_[i] != name) continue;
      std::size_t j = i + 1;
      while (j < args_.size() && args_[j].rfind("--", 0) != 0) values.push_back(args_[j++]);
      args_.erase(args_.begin() + static_cast<long>(i), args_.begin() + static_cast<long>(j));
      break;
    }
    return values;
  }
  bool Flag(const std::string& name) {
    auto found = std::find(args_.begin(), args_.end(), name);
    if (found == args_.end()) return false;
    args_.erase(found);
    return true;
  }
  std::int64_t Number(const std::string& name, std::int64_t fallback) {
    std::optional<std::string> text = Option(name);
    if (!text) return fallback;
    try {
      std::size_t used = 0;
      const long long value = std::stoll(*text, &used);
      if (used != text->size() || value < 0) throw std::invalid_argument("");
      return value;
    } catch (const std::exception&) {
      throw UsageError(name + " takes a whole number, not '" + *text + "'");
    }
  }
  // The positional arguments left, exactly `count` of them (after every option was taken).
  std::vector<std::string> Positional(std::size_t min, std::size_t max, const std::string& what) {
    for (const std::string& arg : args_) {
      if (arg.size() > 1 && arg[0] == '-') throw UsageError("unknown option " + arg);
    }
    if (args_.size() < min || args_.size() > max) throw UsageError("usage: strongroom " + what);
    return args_;
  }

 private:
  std::vector<std::string> args_;
};

}  // namespace strongroom::cli

#endif  // STRONGROOM_CLIENT_CLI_ARGS_H_
