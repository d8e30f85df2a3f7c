#include "strongroom/common/kms_uri.h"

#include <Poco/Exception.h>
#include <Poco/URI.h>

#include <algorithm>
#include <vector>

namespace strongroom {
namespace {

constexpr std::size_t kMaxHostBytes = 253;
constexpr char kShape[] = "/<collection>[/<id>[/<sub>]], each of [A-Za-z0-9_-]{1,64}";

Error Invalid(const std::string& why) {
  return Error(ErrorCode::kInvalidArgument, "malformed KMS URI: " + why);
}

Error NamesNothing(const std::string& why) {
  return Error(ErrorCode::kNotFound, "the URI names nothing a KMS has: " + why);
}

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool IsSegment(std::string_view segment) {
  return !segment.empty() && segment.size() <= KmsUri::kMaxSegmentBytes &&
         std::all_of(segment.begin(), segment.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
         });
}

bool IsHost(std::string_view host) {
  return !host.empty() && host.size() <= kMaxHostBytes &&
         std::all_of(host.begin(), host.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
         });
}

bool IsControl(char c) {
  const auto b = static_cast<unsigned char>(c);
  return b < 0x20 || b == 0x7f;
}

// What Poco::URI lets through but a KMS URI may not hold, checked on the text as written.
Status CheckText(std::string_view text) {
  if (text.empty()) return Invalid("it is empty");
  if (text.size() > KmsUri::kMaxBytes) {
    return Invalid("it is longer than " + std::to_string(KmsUri::kMaxBytes) + " bytes");
  }
  if (std::any_of(text.begin(), text.end(), [](char c) { return c == ' ' || IsControl(c); })) {
    return Invalid("it holds a space or a control character (percent-encode them)");
  }
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && (i + 2 >= text.size() || !IsHex(text[i + 1]) || !IsHex(text[i + 2]))) {
      return Invalid("an invalid percent escape ('%' must be followed by two hex digits)");
    }
  }
  if (text.find('#') != std::string_view::npos) return Invalid("it has a fragment ('#')");
  // Poco::URI keeps only the decoded path, where %2F would be a separator like any other.
  std::string before_query(text.substr(0, text.find('?')));
  std::transform(before_query.begin(), before_query.end(), before_query.begin(),
                 [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; });
  if (before_query.find("%2f") != std::string::npos) {
    return Invalid("an encoded '/' (%2F) in its path: an id cannot hold '/'");
  }
  return OkStatus();
}

Status CheckAuthId(std::string_view value) {
  if (value.empty()) return Invalid("authId is empty");
  if (value.size() > KmsUri::kMaxAuthIdBytes) {
    return Invalid("authId is longer than " + std::to_string(KmsUri::kMaxAuthIdBytes) + " bytes");
  }
  if (std::any_of(value.begin(), value.end(), IsControl)) {
    return Invalid("authId holds a control character");
  }
  return OkStatus();
}

// "authId=<value>" and nothing else; the value percent-decoded once, '+' kept.
Result<std::string> ParseQuery(const std::string& raw) {
  if (raw.empty()) return Invalid("an empty query");
  std::optional<std::string> auth_id;
  std::size_t start = 0;
  while (start <= raw.size()) {
    const std::size_t end = std::min(raw.find('&', start), raw.size());
    const std::string pair = raw.substr(start, end - start);
    const std::size_t equals = pair.find('=');
    std::string name, value;
    Poco::URI::decode(pair.substr(0, equals), name);
    if (name != "authId" || equals == std::string::npos) {
      return Invalid("a query parameter other than authId=<value>");
    }
    if (auth_id) return Invalid("authId is given twice");
    Poco::URI::decode(pair.substr(equals + 1), value);
    SR_RETURN_IF_ERROR(CheckAuthId(value));
    auth_id = std::move(value);
    start = end + 1;
  }
  return std::move(*auth_id);
}

Result<std::vector<std::string>> Segments(const std::string& path) {
  std::vector<std::string> segments;
  if (path.empty()) return segments;
  std::size_t start = 1;
  while (start <= path.size()) {
    const std::size_t end = std::min(path.find('/', start), path.size());
    segments.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  if (segments.size() > 3 || !std::all_of(segments.begin(), segments.end(), IsSegment)) {
    return NamesNothing(std::string("its path is not ") + kShape);
  }
  return segments;
}

}  // namespace

Result<KmsUri> KmsUri::Parse(std::string_view text, std::string_view base_cluster) {
  SR_RETURN_IF_ERROR(CheckText(text));
  Poco::URI uri;
  try {
    uri = Poco::URI(std::string(text));
  } catch (const Poco::Exception& e) {
    return Invalid(e.message());
  }
  KmsUri out;
  if (uri.isRelative()) {
    if (base_cluster.empty()) return Invalid("it is relative and there is no KMS to resolve it");
    if (text.front() != '/' || text.substr(0, 2) == "//") {
      return Invalid("a relative KMS URI starts with one '/'");
    }
    SR_ASSIGN_OR_RETURN(KmsUri base, ParseCluster(base_cluster));
    out.host_ = std::move(base.host_);
    out.port_ = base.port_;
  } else {
    if (uri.getScheme() != "kms") return NamesNothing("its scheme is not kms");
    if (!uri.getUserInfo().empty()) return Invalid("it has user info ('@' before the host)");
    if (!IsHost(uri.getHost())) {
      return Invalid("its host is not a name of letters, digits, '.' and '-'");
    }
    out.host_ = uri.getHost();
    out.port_ = uri.getPort();
  }
  SR_ASSIGN_OR_RETURN(std::vector<std::string> segments, Segments(uri.getPath()));
  if (!segments.empty()) out.collection_ = std::move(segments[0]);
  if (segments.size() > 1) out.id_ = std::move(segments[1]);
  if (segments.size() > 2) out.sub_ = std::move(segments[2]);
  if (text.find('?') != std::string_view::npos) {
    SR_ASSIGN_OR_RETURN(out.auth_id_, ParseQuery(uri.getRawQuery()));
  }
  return out;
}

Result<KmsUri> KmsUri::ParseCluster(std::string_view text) {
  Result<KmsUri> uri = Parse(text);
  if (!uri.ok() || !uri->IsCluster() || uri->auth_id_) {
    return Invalid("a KMS cluster is kms://<host>[:<port>] and nothing more");
  }
  return uri;
}

Result<KmsUri> KmsUri::Make(std::string_view cluster, std::string_view collection,
                            std::string_view id, std::string_view sub,
                            std::optional<std::string_view> auth_id) {
  SR_ASSIGN_OR_RETURN(KmsUri out, ParseCluster(cluster));
  if (!IsSegment(collection) || (!id.empty() && !IsSegment(id)) ||
      (!sub.empty() && (id.empty() || !IsSegment(sub)))) {
    return Invalid(std::string("its path is not ") + kShape);
  }
  out.collection_ = collection;
  out.id_ = id;
  out.sub_ = sub;
  if (auth_id) {
    SR_RETURN_IF_ERROR(CheckAuthId(*auth_id));
    out.auth_id_ = std::string(*auth_id);
  }
  if (out.ToString().size() > kMaxBytes) {
    return Invalid("it is longer than " + std::to_string(kMaxBytes) + " bytes once encoded");
  }
  return out;
}

std::string KmsUri::EncodeQueryValue(std::string_view value) {
  std::string out;
  Poco::URI::encode(std::string(value), "#&+;=?", out);
  return out;
}

std::string KmsUri::cluster() const {
  std::string out = "kms://";
  out += host_;
  if (port_ != 0) {
    out += ':';
    out += std::to_string(port_);
  }
  return out;
}

bool KmsUri::IsItem(std::string_view collection) const {
  return collection_ == collection && !id_.empty() && sub_.empty() && !auth_id_;
}

bool KmsUri::IsUuidItem(std::string_view collection) const {
  if (!IsItem(collection) || id_.size() != 36) return false;
  for (std::size_t i = 0; i < id_.size(); ++i) {
    const char c = id_[i];
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string KmsUri::path() const {
  std::string out;
  for (const std::string* segment : {&collection_, &id_, &sub_}) {
    if (!segment->empty()) out += "/" + *segment;
  }
  return out;
}

std::string KmsUri::ToString() const {
  std::string out = cluster() + path();
  if (auth_id_) out += "?authId=" + EncodeQueryValue(*auth_id_);
  return out;
}

}  // namespace strongroom
