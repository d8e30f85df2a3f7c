// The LDAP functions libpq.a calls, each failing: common links libpq statically (see
// common/CMakeLists.txt) and without OpenLDAP, whose libldap brings GnuTLS and with it p11-kit, a
// PKCS#11 library, into every daemon, cored included, whose realm links no PKCS#11 code
// (docs/architecture.md; CoredLinkTest checks it).
//
// libpq calls these for one thing only: a connection service (pg_service.conf) whose entry is an
// `ldap://` URL (ldapServiceLookup in libpq's fe-connect.c). There ldap_init returns null, so libpq
// fails the connection with "could not create LDAP structure"; docs/operations/deployment.md says
// that such lookups are refused. Nothing else in Strongroom uses LDAP.
#include <cstddef>

extern "C" {

struct ldap;
struct ldapmsg;
struct berval;
struct timeval;
using LDAP = struct ldap;
using LDAPMessage = struct ldapmsg;

constexpr int kLdapNotSupported = -12;  // LDAP_NOT_SUPPORTED

LDAP* ldap_init(const char*, int) { return nullptr; }
int ldap_set_option(LDAP*, int, const void*) { return kLdapNotSupported; }
int ldap_simple_bind(LDAP*, const char*, const char*) { return -1; }
int ldap_result(LDAP*, int, int, struct timeval*, LDAPMessage**) { return -1; }
int ldap_unbind(LDAP*) { return kLdapNotSupported; }
int ldap_search_st(LDAP*, const char*, int, const char*, char**, int, struct timeval*,
                   LDAPMessage**) {
  return kLdapNotSupported;
}
int ldap_count_entries(LDAP*, LDAPMessage*) { return -1; }
LDAPMessage* ldap_first_entry(LDAP*, LDAPMessage*) { return nullptr; }
struct berval** ldap_get_values_len(LDAP*, LDAPMessage*, const char*) {
  return nullptr;
}
void ldap_value_free_len(struct berval**) {}
int ldap_msgfree(LDAPMessage*) { return 0; }
char* ldap_err2string(int) {
  static char message[] = "LDAP service lookups are not built into Strongroom";
  return message;
}

}  // extern "C"
