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

PostgresSessionImpl::PostgresSessionImpl(const std::string& conninfo,
                                         std::shared_ptr<const SecretBytes> password,
                                         std::size_t connect_timeout_s)
    : Poco::Data::SessionImpl(conninfo),
      password_(std::move(password)),
      connect_timeout_s_(std::to_string(connect_timeout_s)) {
  open();
}

PostgresSessionImpl::~PostgresSessionImpl() { close(); }

Poco::SharedPtr<Poco::Data::StatementImpl> PostgresSessionImpl::createStatementImpl() {
  Refuse("a Poco::Data statement");
}

void PostgresSessionImpl::open(const std::string& conninfo) {
  close();
  if (!conninfo.empty()) setConnectionString(conninfo);
  // The string is expanded in place of `dbname` (a key=value string or a URI alike); a keyword
  // given again later wins, so the default timeout goes first and the password last.
  std::string password;
  if (password_ != nullptr) password.assign(password_->as_string_view());
  const char* keywords[] = {"connect_timeout", "dbname",
                            password_ != nullptr ? "password" : nullptr, nullptr};
  const char* values[] = {connect_timeout_s_.c_str(), connectionString().c_str(), password.c_str(),
                          nullptr};
  conn_ = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
  ZeroizeString(password);
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
