// The one error type of Strongroom: a code and a message.
//
// Every component reports failure as an Error. The code says what kind of failure it is (and so
// which HTTP status or KMS protocol status it becomes); the message says what happened in words an
// operator can act on. Messages never contain keys, PINs, tokens or plaintext.
#ifndef STRONGROOM_COMMON_ERROR_H_
#define STRONGROOM_COMMON_ERROR_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace strongroom {

enum class ErrorCode {
  kInvalidArgument,     // the request or configuration is malformed
  kNotFound,            // the named thing does not exist
  kAlreadyExists,       // creating something that exists
  kPermissionDenied,    // authenticated but not allowed
  kUnauthenticated,     // credentials missing, wrong or expired (a wrong PIN too)
  kFailedPrecondition,  // the system is not in a state that allows this
  kResourceExhausted,   // a limit was reached (pool, budget, size)
  kUnavailable,         // a dependency (HSM, database, network) is down; retrying may help
  kDataLoss,            // stored data failed an integrity check (tampered or misbound blob)
  kUnimplemented,       // the operation or mechanism is not supported
  kInternal,            // a broken invariant; a bug
};

std::string_view ErrorCodeName(ErrorCode code);

// A finer reason than the code, for the few failures a client acts on differently from others of
// the same code. Each implies its code, and its name is the one an API answers with in place of
// the code's ("key_rotation_required", docs/api/core.md), so a client reads it back without parsing
// the message.
enum class ErrorReason {
  kNone,
  kKeyRotationRequired,  // FAILED_PRECONDITION: content under a key the conversation replaced
  // UNAVAILABLE: a create /ecdhe sealed to a KMS identity key whose token is down; fetch /kms/info
  // again and seal to the identity it publishes (docs/api/kms.md)
  kIdentityUnavailable,
};

// "key_rotation_required", "identity_unavailable"; empty for kNone.
std::string_view ErrorReasonName(ErrorReason reason);
// The reason of that name; kNone for any other.
ErrorReason ErrorReasonNamed(std::string_view name);
// The code an error of this reason has (INTERNAL for kNone: no error is of that reason).
ErrorCode ErrorCodeOf(ErrorReason reason);

// The HTTP status that answers an error of this code (400, 401, 403, 404, 409, 429, 500, 501,
// 503), for every HTTP listener and the KMS protocol's statuses alike.
int HttpStatusFor(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message, std::uint64_t native_code = 0)
      : code_(code), message_(std::move(message)), native_code_(native_code) {}
  // An error of `reason`, with the code it implies.
  Error(ErrorReason reason, std::string message, std::uint64_t native_code = 0)
      : code_(ErrorCodeOf(reason)),
        reason_(reason),
        message_(std::move(message)),
        native_code_(native_code) {}

  ErrorCode code() const { return code_; }
  ErrorReason reason() const { return reason_; }
  const std::string& message() const { return message_; }
  // The code of the layer below that caused this error (a CKR_* value for PKCS#11), or 0.
  std::uint64_t native_code() const { return native_code_; }

  // "CODE_NAME: message", for logs and command-line output.
  std::string ToString() const;

 private:
  ErrorCode code_;
  ErrorReason reason_ = ErrorReason::kNone;
  std::string message_;
  std::uint64_t native_code_;
};

// A value or an Error. Construction that can fail returns one of these; no half-built objects.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Success or an Error.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{ErrorCode::kInternal, ""};
  bool ok_ = true;
};

inline Status OkStatus() { return Status(); }

}  // namespace strongroom

// Returns early from the enclosing function when `expr` (a Status) failed.
#define SR_RETURN_IF_ERROR(expr)                     \
  do {                                               \
    ::strongroom::Status sr_status_ = (expr);        \
    if (!sr_status_.ok()) return sr_status_.error(); \
  } while (0)

#define SR_CONCAT_INNER_(a, b) a##b
#define SR_CONCAT_(a, b) SR_CONCAT_INNER_(a, b)
// Declares `lhs` from a Result, or returns its Error from the enclosing function.
#define SR_ASSIGN_OR_RETURN(lhs, expr) \
  SR_ASSIGN_OR_RETURN_IMPL_(SR_CONCAT_(sr_result_, __LINE__), lhs, expr)
#define SR_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.error();              \
  lhs = std::move(tmp).value()

#endif  // STRONGROOM_COMMON_ERROR_H_
