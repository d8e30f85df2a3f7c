#include "postgres_session.h"

#include <Poco/Data/DataException.h>

#include <utility>

#include "postgres_statement.h"

namespace strongroom {
namespace {

[[noreturn]] void Refuse(const std::string& what) {
  throw Poco::Data::NotSupportedException(
      what +
      " on PostgreSQL: statements go through Database::Prepare, transactions through "
      "Database::InTransaction");
}

}  // namespace

PostgresSessionImpl::PostgresSessionImpl(const std::string& conninfo)
    : Poco::Data::SessionImpl(conninfo) {
  open();
}

PostgresSessionImpl::~PostgresSessionImpl() { close(); }

Poco::SharedPtr<Poco::Data::StatementImpl> PostgresSessionImpl::createStatementImpl() {
  Refuse("a Poco::Data statement");
}

void PostgresSessionImpl::open(const std::string& conninfo) {
  close();
  if (!conninfo.empty()) setConnectionString(conninfo);
  conn_ = PQconnectdb(connectionString().c_str());
  if (conn_ == nullptr) throw PostgresError("connecting: out of memory", "", true);
  if (PQstatus(conn_) != CONNECTION_OK) {
    PGconn* failed = std::exchange(conn_, nullptr);
    try {
      ThrowPostgresError(failed, nullptr, "connecting");
    } catch (...) {
      PQfinish(failed);
      throw;
    }
  }
}

void PostgresSessionImpl::close() {
  if (conn_ != nullptr) PQfinish(std::exchange(conn_, nullptr));
}

bool PostgresSessionImpl::isConnected() const {
  return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK;
}

void PostgresSessionImpl::begin() { Refuse("Session::begin"); }
void PostgresSessionImpl::commit() { Refuse("Session::commit"); }
void PostgresSessionImpl::rollback() { Refuse("Session::rollback"); }

bool PostgresSessionImpl::isTransaction() const {
  return conn_ != nullptr && PQtransactionStatus(conn_) != PQTRANS_IDLE;
}

void PostgresSessionImpl::setTransactionIsolation(Poco::UInt32 level) {
  if (level != Poco::Data::Session::TRANSACTION_READ_COMMITTED) Refuse("another isolation level");
}

Poco::UInt32 PostgresSessionImpl::getTransactionIsolation() const {
  return Poco::Data::Session::TRANSACTION_READ_COMMITTED;
}

bool PostgresSessionImpl::hasTransactionIsolation(Poco::UInt32 level) const {
  return level == Poco::Data::Session::TRANSACTION_READ_COMMITTED;
}

bool PostgresSessionImpl::isTransactionIsolation(Poco::UInt32 level) const {
  return level == Poco::Data::Session::TRANSACTION_READ_COMMITTED;
}

const std::string& PostgresSessionImpl::connectorName() const {
  static const std::string name = "strongroom-postgresql";
  return name;
}

void PostgresSessionImpl::setFeature(const std::string& name, bool) {
  Refuse("the feature " + name);
}
bool PostgresSessionImpl::getFeature(const std::string& name) { Refuse("the feature " + name); }
void PostgresSessionImpl::setProperty(const std::string& name, const Poco::Any&) {
  Refuse("the property " + name);
}
Poco::Any PostgresSessionImpl::getProperty(const std::string& name) {
  Refuse("the property " + name);
}

PGconn* PostgresHandle(Poco::Data::Session& session) {
  auto* impl = dynamic_cast<PostgresSessionImpl*>(session.impl());
  return impl != nullptr ? impl->handle() : nullptr;
}

}  // namespace strongroom
