// A KMS URI (draft-abiggs-saag-key-management-service):
//
//   kms://<host>[:<port>][/<collection>[/<id>[/<sub>]]][?authId=<value>]
//
// parsed once, with Poco::URI, by the KMS, the core and the client alike. What is accepted:
//   - the scheme kms (in any case), a host name of letters, digits, '.' and '-' (kept in lower
//     case), an optional port; no user info, no fragment, no spaces or control characters;
//   - a path of at most three segments, each [A-Za-z0-9_-]{1,64} once percent-decoded; an encoded
//     '/' (%2F) is refused, never split on;
//   - a query that is exactly one authId=<value>. The value is percent-decoded once (%40 is '@',
//     %2540 is "%40", never '@') and '+' is a literal plus, as RFC 3986 has it, not a space as
//     HTML forms have it: user ids such as a+b@x.test hold one. %2B is a plus too;
//   - a relative reference "/<collection>/..." only against a base cluster (the draft allows it in
//     a request's uri), resolved without any dot-segment removal.
#ifndef STRONGROOM_COMMON_KMS_URI_H_
#define STRONGROOM_COMMON_KMS_URI_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "strongroom/common/error.h"

namespace strongroom {

class KmsUri {
 public:
  static constexpr std::size_t kMaxBytes = 1024;        // the whole URI, as written
  static constexpr std::size_t kMaxSegmentBytes = 64;   // a collection, id or sub
  static constexpr std::size_t kMaxAuthIdBytes = 1024;  // authId, decoded

  // `text` absolute, or relative to `base_cluster` ("kms://<host>") when one is given. Errors:
  // kNotFound for a well-formed URI that names nothing a KMS has (another scheme, a path not of
  // the form above); kInvalidArgument for anything else that is refused (an invalid percent
  // escape, a space or control character, user info, a fragment, a query other than one
  // non-empty authId, an encoded '/', more than kMaxBytes).
  static Result<KmsUri> Parse(std::string_view text, std::string_view base_cluster = {});
  // "kms://<host>[:<port>]" and nothing else.
  static Result<KmsUri> ParseCluster(std::string_view text);
  // The URI of these parts on `cluster`; the parts are checked as Parse checks them.
  static Result<KmsUri> Make(std::string_view cluster, std::string_view collection,
                             std::string_view id = {}, std::string_view sub = {},
                             std::optional<std::string_view> auth_id = std::nullopt);

  // The percent-encoding of an authId in ToString: unreserved characters, ':', '@' and '/' as
  // they are (RFC 3986 allows them in a query), everything else encoded, '+' included.
  static std::string EncodeQueryValue(std::string_view value);

  const std::string& host() const { return host_; }              // without the port
  std::uint16_t port() const { return port_; }                   // 0 when none is given
  std::string cluster() const;                                   // "kms://<host>[:<port>]"
  const std::string& collection() const { return collection_; }  // empty for a bare cluster
  const std::string& id() const { return id_; }
  const std::string& sub() const { return sub_; }
  std::string path() const;  // "/<collection>[/<id>[/<sub>]]", or empty for a bare cluster
  const std::optional<std::string>& auth_id() const { return auth_id_; }  // decoded

  bool IsCluster() const { return collection_.empty(); }
  // <collection>/<id>, without sub or query: IsItem("resources") is "a resource URI".
  bool IsItem(std::string_view collection) const;
  // IsItem, the id a UUID in lower-case hex with dashes: the names a KMS hands out.
  bool IsUuidItem(std::string_view collection) const;

  // The canonical form: lower-case scheme and host, decoded path, authId as EncodeQueryValue
  // writes it. Parse(ToString()) gives this URI back.
  std::string ToString() const;

  bool operator==(const KmsUri& other) const = default;

 private:
  KmsUri() = default;

  std::string host_;
  std::uint16_t port_ = 0;
  std::string collection_;
  std::string id_;
  std::string sub_;
  std::optional<std::string> auth_id_;
};

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_KMS_URI_H_
