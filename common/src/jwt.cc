#include "strongroom/common/jwt.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>

namespace strongroom {
namespace {

struct JsonDeleter {
  void operator()(json_t* json) const { json_decref(json); }
};
using Json = std::unique_ptr<json_t, JsonDeleter>;

Error Unauthenticated(std::string why) {
  return Error(ErrorCode::kUnauthenticated, "bearer token refused: " + std::move(why));
}

Result<Json> ParseObject(std::string_view text) {
  json_error_t error{};
  Json json(json_loadb(text.data(), text.size(), JSON_REJECT_DUPLICATES, &error));
  if (!json || !json_is_object(json.get())) {
    return Error(ErrorCode::kInvalidArgument, "not a JSON object");
  }
  return json;
}

// The payload of a compact JWS, decoded but NOT verified: used only to find the issuer's keys.
Result<std::string> UnverifiedIssuer(std::string_view token) {
  std::size_t first = token.find('.');
  std::size_t second = first == std::string_view::npos ? first : token.find('.', first + 1);
  if (second == std::string_view::npos) return Unauthenticated("not a compact JWS");
  auto payload = jose::Base64UrlDecode(token.substr(first + 1, second - first - 1));
  if (!payload.ok()) return Unauthenticated("payload is not base64url");
  auto claims = ParseObject({reinterpret_cast<const char*>(payload->data()), payload->size()});
  if (!claims.ok()) return Unauthenticated("payload is not a JSON object");
  const char* iss = json_string_value(json_object_get(claims->get(), "iss"));
  if (iss == nullptr) return Unauthenticated("no iss claim");
  return std::string(iss);
}

bool IntegerClaim(json_t* claims, const char* name, std::int64_t* out) {
  json_t* value = json_object_get(claims, name);
  if (value == nullptr) return false;
  if (json_is_integer(value)) {
    *out = json_integer_value(value);
    return true;
  }
  if (json_is_real(value)) {
    *out = static_cast<std::int64_t>(json_real_value(value));
    return true;
  }
  return false;
}

bool AudienceContains(json_t* aud, const std::string& audience) {
  if (json_is_string(aud)) return audience == json_string_value(aud);
  if (!json_is_array(aud)) return false;
  for (std::size_t i = 0; i < json_array_size(aud); ++i) {
    const char* one = json_string_value(json_array_get(aud, i));
    if (one != nullptr && audience == one) return true;
  }
  return false;
}

char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string AsciiLower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = AsciiLower(c);
  return out;
}

// Labels of letters, digits and '-' (not at either end, at most 63) joined by '.'.
bool IsDnsName(std::string_view name) {
  if (name.empty() || name.size() > kMaxDomainBytes) return false;
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    const std::string_view label = name.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      const bool ok =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
      if (!ok) return false;
    }
    start = dot + 1;
  }
  return true;
}

}  // namespace

std::optional<std::string> SubjectDomain(std::string_view subject) {
  const std::size_t at = subject.find('@');
  if (at == std::string_view::npos || at == 0 ||
      subject.find('@', at + 1) != std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view domain = subject.substr(at + 1);
  if (domain.empty() || domain.size() > kMaxDomainBytes) return std::nullopt;
  return AsciiLower(domain);
}

Result<SubjectOrganizations> SubjectOrganizations::New(const std::vector<Issuer>& issuers) {
  SubjectOrganizations out;
  std::set<std::string> orgs;
  for (const Issuer& issuer : issuers) orgs.insert(issuer.org);
  std::string without_domains;  // the first issuer that lists none
  for (const Issuer& issuer : issuers) {
    const std::string named = "issuer " + issuer.issuer + " (organization " + issuer.org + ")";
    if (issuer.subject_domains.size() > kMaxSubjectDomains) {
      return Error(
          ErrorCode::kInvalidArgument,
          named + " lists more than " + std::to_string(kMaxSubjectDomains) + " subject domains");
    }
    std::set<std::string>& domains = out.domains_of_issuer_[issuer.issuer];
    for (const std::string& listed : issuer.subject_domains) {
      if (!IsDnsName(listed)) {
        return Error(ErrorCode::kInvalidArgument, named + ": '" + listed +
                                                      "' in its subject_domains is not a DNS name "
                                                      "(letters, digits, '-' and '.', at most " +
                                                      std::to_string(kMaxDomainBytes) + " bytes)");
      }
      std::string domain = AsciiLower(listed);
      auto [owner, fresh] = out.org_of_domain_.emplace(domain, issuer.org);
      if (!fresh && owner->second != issuer.org) {
        return Error(ErrorCode::kInvalidArgument,
                     "subject domain " + domain + " is listed by issuers of two organizations (" +
                         owner->second + " and " + issuer.org +
                         "): a domain's users belong to one organization");
      }
      domains.insert(std::move(domain));
    }
    if (domains.empty()) {
      if (without_domains.empty()) without_domains = named;
      out.org_of_any_subject_ = issuer.org;
    }
  }
  if (orgs.size() > 1 && !without_domains.empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 "issuers of " + std::to_string(orgs.size()) +
                     " organizations are trusted, so each must list the domains of its users' "
                     "subjects (subject_domains); " +
                     without_domains + " lists none");
  }
  return out;
}

Status SubjectOrganizations::CheckSubject(const std::string& issuer,
                                          std::string_view subject) const {
  auto domains = domains_of_issuer_.find(issuer);
  if (domains == domains_of_issuer_.end()) return Unauthenticated("issuer is not trusted");
  if (domains->second.empty()) return OkStatus();
  std::optional<std::string> domain = SubjectDomain(subject);
  if (!domain) return Unauthenticated("sub is not user@domain, as this issuer's subjects must be");
  if (!domains->second.contains(*domain)) {
    return Unauthenticated("sub is not in a domain of its issuer (subject_domains)");
  }
  return OkStatus();
}

std::optional<std::string> SubjectOrganizations::OrganizationOf(std::string_view subject) const {
  if (std::optional<std::string> domain = SubjectDomain(subject)) {
    auto owner = org_of_domain_.find(*domain);
    if (owner != org_of_domain_.end()) return owner->second;
  }
  return org_of_any_subject_;
}

Result<std::vector<jose::PublicJwk>> ParseJwks(std::string_view text) {
  if (text.size() > 64 * jose::kMaxJwkJsonBytes) {
    return Error(ErrorCode::kInvalidArgument, "JWKS document is too large");
  }
  SR_ASSIGN_OR_RETURN(Json jwks, ParseObject(text));
  json_t* keys = json_object_get(jwks.get(), "keys");
  if (!json_is_array(keys) || json_array_size(keys) == 0 || json_array_size(keys) > 64) {
    return Error(ErrorCode::kInvalidArgument, "a JWKS needs a \"keys\" array of 1 to 64 keys");
  }
  std::vector<jose::PublicJwk> out;
  for (std::size_t i = 0; i < json_array_size(keys); ++i) {
    std::unique_ptr<char, decltype(&free)> one(json_dumps(json_array_get(keys, i), JSON_COMPACT),
                                               &free);
    if (!one) return Error(ErrorCode::kInvalidArgument, "JWKS key is not JSON");
    Result<jose::PublicJwk> key = jose::PublicJwk::Parse(one.get());
    if (!key.ok()) {
      return Error(ErrorCode::kInvalidArgument,
                   "JWKS key " + std::to_string(i) + ": " + key.error().message());
    }
    out.push_back(std::move(key).value());
  }
  return out;
}

// Verified tokens by SHA-256 of their text, in shards so request threads rarely share a lock. A
// full shard forgets an arbitrary entry; a forgotten token is simply verified again.
class JwtVerifier::Cache {
 public:
  struct Entry {
    std::string subject, issuer, org;
    std::int64_t exp = 0, nbf = 0;
  };
  using Digest = std::array<std::uint8_t, 32>;

  explicit Cache(std::size_t capacity) : per_shard_(std::max<std::size_t>(1, capacity / kShards)) {}

  static Digest Hash(std::string_view token) {
    Digest digest{};
    SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest.data());
    return digest;
  }
  std::optional<Entry> Find(const Digest& digest) {
    Shard& shard = ShardOf(digest);
    std::lock_guard lock(shard.mutex);
    auto it = shard.entries.find(digest);
    if (it == shard.entries.end()) return std::nullopt;
    return it->second;
  }
  void Put(const Digest& digest, Entry entry) {
    Shard& shard = ShardOf(digest);
    std::lock_guard lock(shard.mutex);
    if (shard.entries.size() >= per_shard_) shard.entries.erase(shard.entries.begin());
    shard.entries.insert_or_assign(digest, std::move(entry));
  }

 private:
  static constexpr std::size_t kShards = 16;
  struct DigestHash {
    std::size_t operator()(const Digest& d) const {
      std::size_t h;
      std::memcpy(&h, d.data(), sizeof h);
      return h;
    }
  };
  struct Shard {
    std::mutex mutex;
    std::unordered_map<Digest, Entry, DigestHash> entries;
  };
  Shard& ShardOf(const Digest& digest) { return shards_[digest[31] % kShards]; }

  const std::size_t per_shard_;
  std::array<Shard, kShards> shards_;
};

Result<JwtVerifier> JwtVerifier::New(std::vector<TrustedIssuer> issuers, std::string audience,
                                     std::chrono::seconds skew, Clock clock,
                                     std::size_t cache_entries) {
  if (audience.empty()) return Error(ErrorCode::kInvalidArgument, "the audience is empty");
  if (skew < std::chrono::seconds(0) || skew > kMaxClockSkew) {
    return Error(ErrorCode::kInvalidArgument, "clock skew must be 0 to 300 seconds");
  }
  std::vector<SubjectOrganizations::Issuer> claims;
  for (const TrustedIssuer& issuer : issuers) {
    claims.push_back({issuer.issuer, issuer.org, issuer.subject_domains});
  }
  SR_ASSIGN_OR_RETURN(SubjectOrganizations subjects, SubjectOrganizations::New(claims));
  std::map<std::string, TrustedIssuer> by_name;
  for (TrustedIssuer& issuer : issuers) {
    if (issuer.issuer.empty() || issuer.org.empty() || issuer.keys.empty()) {
      return Error(ErrorCode::kInvalidArgument,
                   "an issuer needs a name, an organization and at least one key");
    }
    std::string name = issuer.issuer;
    if (!by_name.emplace(name, std::move(issuer)).second) {
      return Error(ErrorCode::kInvalidArgument, "issuer " + name + " is configured twice");
    }
  }
  if (!clock) {
    clock = [] {
      return static_cast<std::int64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
    };
  }
  return JwtVerifier(std::move(by_name), std::move(subjects), std::move(audience), skew.count(),
                     std::move(clock),
                     cache_entries ? std::make_shared<Cache>(cache_entries) : nullptr);
}

Result<VerifiedJwt> JwtVerifier::Verify(std::string_view token) const {
  if (token.empty() || token.size() > kMaxJwtBytes) return Unauthenticated("size out of range");
  if (!cache_) {
    std::int64_t nbf = 0;
    return VerifySignatureAndClaims(token, &nbf);
  }
  const Cache::Digest digest = Cache::Hash(token);
  if (std::optional<Cache::Entry> hit = cache_->Find(digest)) {
    // The signature and the other claims cannot change; time can.
    const std::int64_t now = clock_();
    if (hit->exp <= now - skew_) return Unauthenticated("the token has expired");
    if (hit->nbf > now + skew_) return Unauthenticated("the token is not valid yet");
    return VerifiedJwt(hit->subject, hit->issuer, hit->org, hit->exp);
  }
  std::int64_t nbf = 0;
  SR_ASSIGN_OR_RETURN(VerifiedJwt verified, VerifySignatureAndClaims(token, &nbf));
  cache_->Put(digest,
              {verified.subject(), verified.issuer(), verified.org(), verified.expires_at(), nbf});
  return verified;
}

Result<VerifiedJwt> JwtVerifier::VerifySignatureAndClaims(std::string_view token,
                                                          std::int64_t* nbf_out) const {
  if (token.empty() || token.size() > kMaxJwtBytes) return Unauthenticated("size out of range");
  Result<jose::JoseHeader> header = jose::PeekHeader(token);
  if (!header.ok() || header->part_count != 3) return Unauthenticated("not a compact JWS");
  SR_ASSIGN_OR_RETURN(std::string issuer_name, UnverifiedIssuer(token));
  auto issuer = issuers_.find(issuer_name);
  if (issuer == issuers_.end()) return Unauthenticated("issuer is not trusted");

  const jose::PublicJwk* key = nullptr;
  for (const jose::PublicJwk& candidate : issuer->second.keys) {
    if (header->kid ? candidate.kid() == header->kid : issuer->second.keys.size() == 1) {
      key = &candidate;
      break;
    }
  }
  if (key == nullptr) return Unauthenticated("no key of the issuer matches the token's kid");
  const std::string_view allowed[] = {"ES256", "RS256"};
  Result<jose::VerifiedJws> jws = jose::VerifyJws(token, *key, allowed);
  if (!jws.ok()) return Unauthenticated(jws.error().message());

  Result<Json> claims = ParseObject(jws->payload());
  if (!claims.ok()) return Unauthenticated("claims are not a JSON object");
  json_t* c = claims->get();
  const char* iss = json_string_value(json_object_get(c, "iss"));
  if (iss == nullptr || issuer_name != iss) return Unauthenticated("iss changed");
  const char* sub = json_string_value(json_object_get(c, "sub"));
  if (sub == nullptr || *sub == '\0' || std::string_view(sub).size() > 256) {
    return Unauthenticated("sub missing or longer than 256 bytes");
  }
  SR_RETURN_IF_ERROR(subjects_.CheckSubject(issuer_name, sub));
  if (!AudienceContains(json_object_get(c, "aud"), audience_)) {
    return Unauthenticated("the token is not for audience " + audience_);
  }
  const std::int64_t now = clock_();
  std::int64_t exp = 0, nbf = 0;
  if (!IntegerClaim(c, "exp", &exp)) return Unauthenticated("no exp claim");
  if (exp <= now - skew_) return Unauthenticated("the token has expired");
  if (json_object_get(c, "nbf") != nullptr) {
    if (!IntegerClaim(c, "nbf", &nbf)) return Unauthenticated("nbf is not a number");
    if (nbf > now + skew_) return Unauthenticated("the token is not valid yet");
  }
  *nbf_out = nbf;
  return VerifiedJwt(sub, issuer_name, issuer->second.org, exp);
}

Result<std::string> MintJwt(const jose::EcKeyPair& key, const JwtToMint& mint) {
  if (mint.issuer.empty() || mint.subject.empty() || mint.audience.empty() ||
      mint.lifetime_seconds <= 0) {
    return Error(ErrorCode::kInvalidArgument,
                 "a token needs an issuer, a subject, an audience and a positive lifetime");
  }
  std::uint8_t id[16];
  if (RAND_bytes(id, sizeof id) != 1) return Error(ErrorCode::kInternal, "RAND_bytes failed");
  Json claims(json_object());
  json_object_set_new(claims.get(), "iss", json_string(mint.issuer.c_str()));
  json_object_set_new(claims.get(), "sub", json_string(mint.subject.c_str()));
  json_object_set_new(claims.get(), "aud", json_string(mint.audience.c_str()));
  json_object_set_new(claims.get(), "iat", json_integer(mint.issued_at));
  json_object_set_new(claims.get(), "nbf", json_integer(mint.issued_at));
  json_object_set_new(claims.get(), "exp", json_integer(mint.issued_at + mint.lifetime_seconds));
  json_object_set_new(claims.get(), "jti", json_string(jose::Base64UrlEncode(id).c_str()));
  std::unique_ptr<char, decltype(&free)> text(json_dumps(claims.get(), JSON_COMPACT), &free);
  if (!text) return Error(ErrorCode::kInternal, "cannot serialize claims");
  std::map<std::string, std::string> header = {{"typ", "JWT"}};
  if (key.kid()) header["kid"] = *key.kid();
  std::string_view payload(text.get());
  return jose::SignJws(key, "ES256",
                       {reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()},
                       header);
}

}  // namespace strongroom
