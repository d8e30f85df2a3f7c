// One SQL statement of a unit of work (Database::InTransaction, WithSession), compiled once per
// pooled connection and kept with it: Database::Prepare(session, sql) hands out the connection's
// compiled statement for that SQL text, re-bound for this use, instead of compiling it again (the
// compilation cost more than running most of the KMS's statements, and its allocations much of the
// rest). The cache is the Database's business: a store names its SQL and binds and reads values,
// and knows nothing of the engine behind it.
//
//   SqlStatement find = Database::Prepare(s, "SELECT org, created_ms FROM keys WHERE uri = ?");
//   find.Bind(uri);
//   if (find.Next()) org = find.Text(0);
//
// Parameters are bound in order (the first `?` first); text and blobs are copied at Bind, so the
// values need not outlive it. Next() steps to the next row (false after the last), Run() steps to
// the end and returns the rows changed. A failure throws the Poco::Data exception a Poco statement
// would throw (busy and locked are told apart), which InTransaction and WithSession turn into a
// Status and a rollback, as for any statement of the unit of work.
//
// The lease ends with the SqlStatement: the statement is reset and its values unbound, so it holds
// no read snapshot and no copy of a value once its scope ends. The same SQL leased again while the
// first lease lives (a statement run inside the loop over another's rows) gets a statement of its
// own for that use. Not thread-safe: a statement belongs to the unit of work that prepared it.
#ifndef STRONGROOM_COMMON_SQL_STATEMENT_H_
#define STRONGROOM_COMMON_SQL_STATEMENT_H_

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace strongroom {

class SqlStatement {
 public:
  SqlStatement(SqlStatement&& other) noexcept;
  SqlStatement& operator=(SqlStatement&&) = delete;
  SqlStatement(const SqlStatement&) = delete;
  SqlStatement& operator=(const SqlStatement&) = delete;
  ~SqlStatement();

  // Binds the next parameter.
  SqlStatement& Bind(std::int64_t value);
  SqlStatement& Bind(std::string_view text);
  SqlStatement& Bind(const std::string& text) { return Bind(std::string_view(text)); }
  SqlStatement& Bind(const char* text) { return Bind(std::string_view(text)); }
  SqlStatement& Bind(const std::optional<std::int64_t>& value);  // NULL when empty
  SqlStatement& Bind(const std::optional<std::string>& text);    // NULL when empty
  SqlStatement& BindBlob(std::span<const std::uint8_t> bytes);
  SqlStatement& BindBlob(std::string_view bytes);
  SqlStatement& BindNull();

  // Steps to the next row: true while there is one to read.
  bool Next();
  // Steps to the end (a statement that returns no rows); how many rows it inserted, changed or
  // deleted.
  std::int64_t Run();
  // Makes the statement ready to be bound and run again, its values unbound.
  void Reset();

  // The current row's columns, from 0.
  bool IsNull(int column) const;
  std::int64_t Int(int column) const;
  std::string Text(int column) const;
  std::optional<std::int64_t> OptionalInt(int column) const;
  std::optional<std::string> OptionalText(int column) const;
  // Valid until the next step or the end of the lease.
  std::span<const std::uint8_t> Blob(int column) const;

  // The statement's internals, the Database's alone.
  struct Handle;

 private:
  friend class Database;
  // `owned`: a statement of this use alone, finalized at the end of the lease.
  SqlStatement(Handle* handle, bool owned);

  Handle* handle_;
  bool owned_;
};

// Rows written with multi-row INSERTs: a statement per power of two of rows (64, 32, ..., 1), so
// n rows cost at most log2(n) + 1 statements, each a round trip to a database server, and a
// connection keeps at most seven of them compiled.
//
//   static const MultiRowInsert kInsert("INSERT INTO t (a, b) VALUES ", 2);
//   kInsert.ForEachChunk(rows.size(), [&](std::size_t first, std::size_t n, const std::string& sql)
//   {
//     SqlStatement insert = Database::Prepare(s, sql);
//     for (std::size_t i = first; i < first + n; ++i) insert.Bind(rows[i].a).Bind(rows[i].b);
//     insert.Run();
//   });
class MultiRowInsert {
 public:
  static constexpr std::size_t kMaxRows = 64;

  // `head` (INSERT INTO table (columns) VALUES ), a `(?, ...)` of `columns` per row, then `tail`
  // (an ON CONFLICT clause, say).
  MultiRowInsert(std::string_view head, std::size_t columns, std::string_view tail = {}) {
    std::string row = "(";
    for (std::size_t c = 0; c < columns; ++c) row += c == 0 ? "?" : ", ?";
    row += ")";
    for (std::size_t i = 0; i < sql_.size(); ++i) {
      sql_[i] = std::string(head);
      for (std::size_t r = 0; r < (std::size_t{1} << i); ++r) sql_[i] += (r == 0 ? "" : ", ") + row;
      sql_[i] += tail;
    }
  }

  // Calls `chunk` for consecutive chunks of rows [0, n), each of a power of two of rows, with the
  // statement for that many.
  void ForEachChunk(std::size_t n, const std::function<void(std::size_t first, std::size_t rows,
                                                            const std::string& sql)>& chunk) const {
    for (std::size_t first = 0, i = sql_.size() - 1; first < n;) {
      while ((std::size_t{1} << i) > n - first) --i;
      chunk(first, std::size_t{1} << i, sql_[i]);
      first += std::size_t{1} << i;
    }
  }

 private:
  static_assert(kMaxRows == std::size_t{1} << 6);
  std::array<std::string, 7> sql_;
};

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_SQL_STATEMENT_H_
