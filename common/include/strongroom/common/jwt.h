// Bearer tokens: JWTs from an organization's identity provider (RFC 7519), verified against the
// issuer's published keys. Both realms use this: the KMS accepts only tokens whose audience is
// "kms", the core only "core", so a token for one is refused by the other.
//
// Accepted: compact JWS signed ES256 (EC P-256) or RS256 (RSA) by a key of a configured issuer
// (chosen by "kid"; an issuer with a single key may omit it). Required claims: iss (a configured
// issuer), sub (1-256 bytes), aud (a string or array containing the expected audience), exp
// (after now - skew); nbf, when present, must be before now + skew. The organization is the one
// configured for the issuer, never a claim, and the subject must be one of the issuer's: where
// issuers list subject domains, `sub` is `local@domain` with a domain of its issuer's (see
// SubjectOrganizations), so another organization's identity provider cannot sign for our users.
#ifndef STRONGROOM_COMMON_JWT_H_
#define STRONGROOM_COMMON_JWT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/jose.h"

namespace strongroom {

inline constexpr std::size_t kMaxJwtBytes = 16 * 1024;
inline constexpr std::chrono::seconds kMaxClockSkew{300};
inline constexpr std::size_t kMaxSubjectDomains = 100;  // per issuer
inline constexpr std::size_t kMaxDomainBytes = 253;

struct TrustedIssuer {
  std::string issuer;                 // the exact "iss" value
  std::string org;                    // the organization its users belong to
  std::vector<jose::PublicJwk> keys;  // its JWKS
  // The domains of the subjects it signs for; empty: any subject (only while every trusted issuer
  // is of one organization). See SubjectOrganizations.
  std::vector<std::string> subject_domains = {};
};

// The domain of a subject `local@domain` (exactly one '@', neither part empty, the domain at most
// kMaxDomainBytes), in ASCII lower case; nullopt for any other subject.
std::optional<std::string> SubjectDomain(std::string_view subject);

// Which organization a subject belongs to. Each issuer lists the domains of its users' subjects
// (`local@domain`; domains compared ASCII case-insensitively, exactly: a subdomain is another
// domain), and signs only for those. No domain is listed by issuers of two organizations, so a
// subject names at most one organization, and an identity provider of one cannot sign for a user
// of another. With issuers of several organizations each must list its domains; with one
// organization they are optional, and an issuer that lists none signs for any subject.
class SubjectOrganizations {
 public:
  struct Issuer {
    std::string issuer;  // the exact "iss" value
    std::string org;
    std::vector<std::string> subject_domains;
  };

  // INVALID_ARGUMENT when a domain is not a DNS name (labels of letters, digits and '-' joined by
  // '.', at most kMaxDomainBytes), an issuer lists more than kMaxSubjectDomains, issuers of two
  // organizations list one domain, or there are several organizations and an issuer lists none.
  static Result<SubjectOrganizations> New(const std::vector<Issuer>& issuers);

  // OK when `issuer` may sign for `subject`; otherwise UNAUTHENTICATED with a message that says
  // which check failed (never the subject). An issuer New was not given signs for nobody.
  Status CheckSubject(const std::string& issuer, std::string_view subject) const;

  // The organization `subject` is a user of (the one listing its domain, or the one organization
  // whose issuer lists no domain), or nullopt: then no trusted issuer may sign for it.
  std::optional<std::string> OrganizationOf(std::string_view subject) const;

 private:
  SubjectOrganizations() = default;
  std::map<std::string, std::set<std::string>> domains_of_issuer_;  // lower case; empty: any
  std::map<std::string, std::string> org_of_domain_;
  std::optional<std::string> org_of_any_subject_;  // when an issuer lists no domain
};

// Parses a JWKS document ({"keys": [...]}); at most 64 keys.
Result<std::vector<jose::PublicJwk>> ParseJwks(std::string_view json);

// A token whose signature and claims were checked; only JwtVerifier makes one.
class VerifiedJwt {
 public:
  const std::string& subject() const { return subject_; }
  const std::string& issuer() const { return issuer_; }
  const std::string& org() const { return org_; }
  std::int64_t expires_at() const { return expires_at_; }  // seconds since the epoch

 private:
  friend class JwtVerifier;
  VerifiedJwt(std::string subject, std::string issuer, std::string org, std::int64_t expires_at)
      : subject_(std::move(subject)),
        issuer_(std::move(issuer)),
        org_(std::move(org)),
        expires_at_(expires_at) {}
  std::string subject_, issuer_, org_;
  std::int64_t expires_at_;
};

class JwtVerifier {
 public:
  using Clock = std::function<std::int64_t()>;  // seconds since the epoch

  // Fails on an empty audience, a skew above kMaxClockSkew, duplicate issuers, an issuer without
  // keys or subject domains SubjectOrganizations::New refuses. Up to `cache_entries` verified
  // tokens are remembered (by SHA-256 of the token) so a client's repeated bearer costs a hash, not
  // a signature check; a remembered token's exp and nbf are still checked against the clock on
  // every use. 0 disables it.
  static Result<JwtVerifier> New(std::vector<TrustedIssuer> issuers, std::string audience,
                                 std::chrono::seconds skew, Clock clock = {},
                                 std::size_t cache_entries = kDefaultJwtCacheEntries);

  // Any failure is UNAUTHENTICATED with a message that says which check failed (never the token).
  // Thread-safe.
  Result<VerifiedJwt> Verify(std::string_view token) const;

  // Whose users the trusted issuers sign for.
  const SubjectOrganizations& subjects() const { return subjects_; }

  static constexpr std::size_t kDefaultJwtCacheEntries = 16384;

 private:
  class Cache;
  JwtVerifier(std::map<std::string, TrustedIssuer> issuers, SubjectOrganizations subjects,
              std::string audience, std::int64_t skew, Clock clock, std::shared_ptr<Cache> cache)
      : issuers_(std::move(issuers)),
        subjects_(std::move(subjects)),
        audience_(std::move(audience)),
        skew_(skew),
        clock_(std::move(clock)),
        cache_(std::move(cache)) {}
  Result<VerifiedJwt> VerifySignatureAndClaims(std::string_view token, std::int64_t* nbf) const;

  std::map<std::string, TrustedIssuer> issuers_;
  SubjectOrganizations subjects_;
  std::string audience_;
  std::int64_t skew_;
  Clock clock_;
  std::shared_ptr<Cache> cache_;  // shared by copies; null when disabled
};

// What a development identity provider puts into a token it mints.
struct JwtToMint {
  std::string issuer;
  std::string subject;
  std::string audience;
  std::int64_t issued_at = 0;  // seconds since the epoch
  std::int64_t lifetime_seconds = 3600;
};

// Signs an ES256 JWT with the key's kid in the header, and a random jti.
Result<std::string> MintJwt(const jose::EcKeyPair& key, const JwtToMint& claims);

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_JWT_H_
