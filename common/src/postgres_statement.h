// The PostgreSQL side of SqlStatement (Database's business alone): one statement on a libpq
// connection, prepared once under a name of the connection's (kept) or sent with its values each
// time (for one use), its values bound in order and sent as text (numbers, text) or binary
// (blobs), its rows read back as text (bytea decoded from hex).
//
// `?` placeholders become `$1, $2, ...` once, when the statement is made; so the stores write one
// SQL text for both engines. A failure throws PostgresError, a Poco::Data::DataException that keeps
// the SQLSTATE and whether the connection was lost.
#ifndef STRONGROOM_COMMON_SRC_POSTGRES_STATEMENT_H_
#define STRONGROOM_COMMON_SRC_POSTGRES_STATEMENT_H_

#include <Poco/Data/DataException.h>
#include <libpq-fe.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace strongroom {

class PostgresError : public Poco::Data::DataException {
 public:
  PostgresError(const std::string& message, std::string sqlstate, bool connection_lost);
  const char* name() const noexcept override { return "PostgreSQL error"; }
  const char* className() const noexcept override { return typeid(*this).name(); }
  Poco::Exception* clone() const override { return new PostgresError(*this); }
  void rethrow() const override { throw *this; }

  const std::string& sqlstate() const { return sqlstate_; }
  // The server is out of reach, busy or in the way (refused, lost, shutting down, a lock not
  // granted in time, a conflict with another transaction): the work may succeed later.
  bool unavailable() const;

 private:
  std::string sqlstate_;
  bool connection_lost_;
};

// Throws the PostgresError for `result` (or for the connection, when there is no result).
[[noreturn]] void ThrowPostgresError(PGconn* conn, const PGresult* result, std::string_view what);

// `sql` with its `?` placeholders numbered `$1, $2, ...` (outside quotes and comments).
std::string NumberPlaceholders(std::string_view sql);

// Runs `sql` (one or several statements, no parameters) on `conn`; throws when it fails.
void ExecutePostgres(PGconn* conn, const std::string& sql);

// COMMITs the transaction open on `conn`; throws when the server rolled it back instead (a
// statement in it had failed, and the work went on regardless).
void CommitPostgres(PGconn* conn);

class PostgresStatement {
 public:
  // A statement kept under `name` (prepared now: throws when it does not compile), or, with an
  // empty name, one whose SQL goes with its values to the server at each run.
  PostgresStatement(PGconn* conn, std::string name, std::string_view sql);
  ~PostgresStatement();
  PostgresStatement(const PostgresStatement&) = delete;
  PostgresStatement& operator=(const PostgresStatement&) = delete;

  void BindText(std::string_view text);
  void BindInt(std::int64_t value);
  void BindBlob(std::span<const std::uint8_t> bytes);
  void BindNull();

  bool Next();
  std::int64_t Run();
  void Reset();

  bool IsNull(int column) const;
  std::int64_t Int(int column) const;
  std::string Text(int column) const;
  std::span<const std::uint8_t> Blob(int column) const;

 private:
  void Execute();
  void CheckColumn(int column) const;

  PGconn* const conn_;
  const std::string name_;
  const std::string sql_;  // numbered placeholders
  std::vector<std::optional<std::string>> values_;
  std::vector<int> formats_;  // 0 text, 1 binary
  PGresult* result_ = nullptr;
  int row_ = -1;
  // The current row's bytea columns, decoded as Blob() reads them; cleared at each step.
  mutable std::vector<std::optional<std::vector<std::uint8_t>>> decoded_;
};

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_SRC_POSTGRES_STATEMENT_H_
