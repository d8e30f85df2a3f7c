#include "postgres_statement.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>

namespace strongroom {
namespace {

constexpr Oid kByteaOid = 17;

using ResultPtr = std::unique_ptr<PGresult, decltype(&PQclear)>;

bool StartsWith(const std::string& text, std::string_view prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A bytea column's text form (bytea_output = hex, the default: "\x0a1b...") as bytes.
std::vector<std::uint8_t> DecodeBytea(std::string_view text) {
  if (text.size() < 2 || text[0] != '\\' || text[1] != 'x' || text.size() % 2 != 0) {
    throw Poco::Data::DataException("a bytea value not in hex form");
  }
  std::vector<std::uint8_t> bytes;
  bytes.reserve(text.size() / 2 - 1);
  for (std::size_t i = 2; i < text.size(); i += 2) {
    const int high = HexDigit(text[i]), low = HexDigit(text[i + 1]);
    if (high < 0 || low < 0) throw Poco::Data::DataException("a bytea value not in hex form");
    bytes.push_back(static_cast<std::uint8_t>(high * 16 + low));
  }
  return bytes;
}

void Check(PGconn* conn, PGresult* result, std::string_view what) {
  const ExecStatusType status = PQresultStatus(result);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return;
  ResultPtr owned(result, &PQclear);
  if (status == PGRES_EMPTY_QUERY) {
    throw Poco::Data::DataException("a prepared statement is one SQL statement");
  }
  ThrowPostgresError(conn, result, what);
}

}  // namespace

PostgresError::PostgresError(const std::string& message, std::string sqlstate, bool connection_lost)
    : Poco::Data::DataException(message),
      sqlstate_(std::move(sqlstate)),
      connection_lost_(connection_lost) {}

bool PostgresError::unavailable() const {
  // Connection exceptions (08; but a protocol violation, 08P01, such as values that do not match
  // the statement's parameters, is ours), insufficient resources (53), the server shutting down or
  // not yet accepting connections (57P), a lock not granted within lock_timeout (55P03), and
  // transactions that conflicted with another (serialization failure 40001, deadlock 40P01).
  if (sqlstate_ == "08P01" && !connection_lost_) return false;
  return connection_lost_ || StartsWith(sqlstate_, "08") || StartsWith(sqlstate_, "53") ||
         StartsWith(sqlstate_, "57P") || sqlstate_ == "55P03" || sqlstate_ == "40001" ||
         sqlstate_ == "40P01";
}

void ThrowPostgresError(PGconn* conn, const PGresult* result, std::string_view what) {
  std::string message = result != nullptr ? PQresultErrorMessage(result) : "";
  if (message.empty()) message = PQerrorMessage(conn);
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  const char* sqlstate = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  throw PostgresError(std::string(what) + ": " + message, sqlstate != nullptr ? sqlstate : "",
                      PQstatus(conn) != CONNECTION_OK);
}

std::string NumberPlaceholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size() + 16);
  int next = 1;
  char quote = 0;  // ' or " while inside quotes
  for (std::size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (quote != 0) {
      if (c == quote) quote = 0;  // a doubled quote closes and opens again: the same
      out += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      out += c;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      const std::size_t end = sql.find('\n', i);
      const std::size_t stop = end == std::string_view::npos ? sql.size() : end;
      out.append(sql.substr(i, stop - i));
      i = stop - 1;
    } else if (c == '?') {
      out += '$' + std::to_string(next++);
    } else {
      out += c;
    }
  }
  return out;
}

void ExecutePostgres(PGconn* conn, const std::string& sql) {
  Check(conn, PQexec(conn, sql.c_str()), "running a statement");
}

void CommitPostgres(PGconn* conn) {
  PGresult* result = PQexec(conn, "COMMIT");
  Check(conn, result, "committing");
  ResultPtr committed(result, &PQclear);
  if (std::strcmp(PQcmdStatus(result), "COMMIT") != 0) {
    throw PostgresError("the transaction was rolled back: a statement in it had failed", "25P02",
                        false);
  }
}

PostgresStatement::PostgresStatement(PGconn* conn, std::string name, std::string_view sql)
    : conn_(conn), name_(std::move(name)), sql_(NumberPlaceholders(sql)) {
  if (name_.empty()) return;
  PGresult* prepared = PQprepare(conn_, name_.c_str(), sql_.c_str(), 0, nullptr);
  if (PQresultStatus(prepared) == PGRES_EMPTY_QUERY) {
    PQclear(prepared);
    throw Poco::Data::DataException("a prepared statement is one SQL statement");
  }
  Check(conn_, prepared, "compiling a statement");
  PQclear(prepared);
}

PostgresStatement::~PostgresStatement() { PQclear(result_); }

void PostgresStatement::BindText(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) {
    throw Poco::Data::DataException("binding a parameter: PostgreSQL text holds no NUL byte");
  }
  values_.emplace_back(std::string(text));
  formats_.push_back(0);
}

void PostgresStatement::BindInt(std::int64_t value) {
  values_.emplace_back(std::to_string(value));
  formats_.push_back(0);
}

void PostgresStatement::BindBlob(std::span<const std::uint8_t> bytes) {
  values_.emplace_back(std::string(bytes.begin(), bytes.end()));
  formats_.push_back(1);
}

void PostgresStatement::BindNull() {
  values_.emplace_back(std::nullopt);
  formats_.push_back(0);
}

void PostgresStatement::Execute() {
  std::vector<const char*> values;
  std::vector<int> lengths;
  for (const std::optional<std::string>& value : values_) {
    values.push_back(value ? value->data() : nullptr);
    lengths.push_back(value ? static_cast<int>(value->size()) : 0);
  }
  const int n = static_cast<int>(values.size());
  PGresult* result = name_.empty() ? PQexecParams(conn_, sql_.c_str(), n, nullptr, values.data(),
                                                  lengths.data(), formats_.data(), 0)
                                   : PQexecPrepared(conn_, name_.c_str(), n, values.data(),
                                                    lengths.data(), formats_.data(), 0);
  Check(conn_, result, "running a statement");
  result_ = result;
  row_ = -1;
}

bool PostgresStatement::Next() {
  if (result_ == nullptr) Execute();
  decoded_.clear();
  if (row_ < PQntuples(result_)) ++row_;
  return row_ < PQntuples(result_);
}

std::int64_t PostgresStatement::Run() {
  if (result_ == nullptr) Execute();
  row_ = PQntuples(result_);
  decoded_.clear();
  const char* changed = PQcmdTuples(result_);
  return changed[0] != '\0' ? std::strtoll(changed, nullptr, 10) : 0;
}

void PostgresStatement::Reset() {
  PQclear(result_);
  result_ = nullptr;
  row_ = -1;
  values_.clear();
  formats_.clear();
  decoded_.clear();
}

// As SQLite's columns: one past the row's last, or off a row, reads as NULL.
bool PostgresStatement::IsNull(int column) const {
  if (result_ == nullptr || row_ < 0 || row_ >= PQntuples(result_) || column < 0 ||
      column >= PQnfields(result_)) {
    return true;
  }
  return PQgetisnull(result_, row_, column) != 0;
}

std::int64_t PostgresStatement::Int(int column) const {
  if (IsNull(column)) return 0;
  const char* value = PQgetvalue(result_, row_, column);
  if (std::strcmp(value, "t") == 0) return 1;  // boolean
  if (std::strcmp(value, "f") == 0) return 0;
  return std::strtoll(value, nullptr, 10);
}

std::string PostgresStatement::Text(int column) const {
  if (IsNull(column)) return std::string();
  if (PQftype(result_, column) == kByteaOid) {
    const std::span<const std::uint8_t> bytes = Blob(column);
    return std::string(bytes.begin(), bytes.end());
  }
  return std::string(PQgetvalue(result_, row_, column),
                     static_cast<std::size_t>(PQgetlength(result_, row_, column)));
}

std::span<const std::uint8_t> PostgresStatement::Blob(int column) const {
  if (IsNull(column)) return {};
  const char* value = PQgetvalue(result_, row_, column);
  const auto length = static_cast<std::size_t>(PQgetlength(result_, row_, column));
  if (PQftype(result_, column) != kByteaOid) {
    return {reinterpret_cast<const std::uint8_t*>(value), length};
  }
  if (decoded_.size() <= static_cast<std::size_t>(column)) decoded_.resize(column + 1);
  std::optional<std::vector<std::uint8_t>>& bytes = decoded_[column];
  if (!bytes) bytes = DecodeBytea(std::string_view(value, length));
  return *bytes;
}

}  // namespace strongroom
