// A Poco::Data session on a PostgreSQL connection of libpq's, so that the stores' work takes one
// `Poco::Data::Session&` on both engines. It only holds the connection: every statement goes
// through Database::Prepare (SqlStatement on the PGconn), and Database begins and ends the
// transactions. Poco's own statements (`session << "..."`) and transactions are refused with an
// error that says so, rather than run half-supported.
//
// Ours and not Poco's PostgreSQL connector (libPocoDataPostgreSQL): that library links Debian's
// libpq.so, which brings libldap, GnuTLS and p11-kit into every daemon, cored included, whose realm
// links no PKCS#11 code; common links libpq statically instead (common/CMakeLists.txt).
#ifndef STRONGROOM_COMMON_SRC_POSTGRES_SESSION_H_
#define STRONGROOM_COMMON_SRC_POSTGRES_SESSION_H_

#include <Poco/Data/Session.h>
#include <Poco/Data/SessionImpl.h>
#include <libpq-fe.h>

#include <memory>
#include <string>

#include "strongroom/common/secret_bytes.h"

namespace strongroom {

class PostgresSessionImpl : public Poco::Data::SessionImpl {
 public:
  // Connects (PQconnectdbParams): `connect_timeout_s` unless `conninfo` names its own, and
  // `password` (if not null) over any `conninfo` holds; throws PostgresError, UNAVAILABLE, when the
  // server cannot be reached.
  PostgresSessionImpl(const std::string& conninfo, std::shared_ptr<const SecretBytes> password,
                      std::size_t connect_timeout_s);
  ~PostgresSessionImpl() override;

  PGconn* handle() const { return conn_; }

  // Refused: statements are Database::Prepare's.
  Poco::SharedPtr<Poco::Data::StatementImpl> createStatementImpl() override;

  void open(const std::string& conninfo = "") override;
  void close() override;
  bool isConnected() const override;
  void setConnectionTimeout(std::size_t timeout) override { connection_timeout_ = timeout; }
  std::size_t getConnectionTimeout() const override { return connection_timeout_; }
  void reset() override {}

  // Refused: Database::InTransaction begins and ends the transactions.
  void begin() override;
  void commit() override;
  void rollback() override;
  bool canTransact() const override { return false; }
  bool isTransaction() const override;

  // READ COMMITTED, PostgreSQL's default, alone (database.h says what the writers' lock adds).
  void setTransactionIsolation(Poco::UInt32 level) override;
  Poco::UInt32 getTransactionIsolation() const override;
  bool hasTransactionIsolation(Poco::UInt32 level) const override;
  bool isTransactionIsolation(Poco::UInt32 level) const override;

  const std::string& connectorName() const override;

  // No features or properties: refused.
  void setFeature(const std::string& name, bool state) override;
  bool getFeature(const std::string& name) override;
  void setProperty(const std::string& name, const Poco::Any& value) override;
  Poco::Any getProperty(const std::string& name) override;

 private:
  const std::shared_ptr<const SecretBytes> password_;
  const std::string connect_timeout_s_;
  PGconn* conn_ = nullptr;
  std::size_t connection_timeout_ = CONNECTION_TIMEOUT_DEFAULT;
};

// The libpq connection of one of our PostgreSQL sessions; null for any other session.
PGconn* PostgresHandle(Poco::Data::Session& session);

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_SRC_POSTGRES_SESSION_H_
