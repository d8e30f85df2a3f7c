#include "strongroom/kms/message_json.h"

#include <array>
#include <cstdio>
#include <ctime>
#include <vector>

#include "strongroom/common/jose.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::kms {
namespace {

constexpr int kMaxDepth = 8;
constexpr std::size_t kMaxDigits = 15;
// Names are compared with every earlier one in their object: more than this many members (a
// request has a handful) go to the parser, whose check of repeated names does not grow so.
constexpr std::size_t kMaxMembers = 32;

// Where a member's value goes, by the object it is in.
enum class In { kTop, kClient, kCredential, kOther };

// A recursive-descent reader of the plain subset (message_json.h). Every function returns false
// for a text outside it; nothing is reported, as the caller then reads the text another way.
class PlainReader {
 public:
  explicit PlainReader(std::string_view text) : text_(text) {}

  bool Read(RequestFields& fields) {
    fields_ = &fields;
    Space();
    if (!Object(In::kTop, 1)) return false;
    Space();
    return at_ == text_.size();
  }

 private:
  void Space() {
    while (at_ < text_.size() &&
           (text_[at_] == ' ' || text_[at_] == '\t' || text_[at_] == '\n' || text_[at_] == '\r')) {
      ++at_;
    }
  }
  bool Next(char c) {
    Space();
    if (at_ < text_.size() && text_[at_] == c) {
      ++at_;
      return true;
    }
    return false;
  }

  // A string at `at_` (its opening quote), decoded into `out`.
  bool String(std::string& out) {
    if (at_ >= text_.size() || text_[at_] != '"') return false;
    ++at_;
    out.clear();
    while (at_ < text_.size()) {
      const char c = text_[at_++];
      if (c == '"') return true;
      if (c < 0x20 || c > 0x7e) return false;  // control, DEL, or not ASCII
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_ >= text_.size()) return false;
      switch (text_[at_++]) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          if (at_ + 4 > text_.size()) return false;
          unsigned value = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = text_[at_++];
            value <<= 4;
            if (h >= '0' && h <= '9') {
              value |= static_cast<unsigned>(h - '0');
            } else if (h >= 'a' && h <= 'f') {
              value |= static_cast<unsigned>(h - 'a' + 10);
            } else if (h >= 'A' && h <= 'F') {
              value |= static_cast<unsigned>(h - 'A' + 10);
            } else {
              return false;
            }
          }
          if (value < 0x20 || value > 0x7e) return false;
          out += static_cast<char>(value);
          break;
        }
        default:
          return false;
      }
    }
    return false;  // unterminated
  }

  bool Number() {
    if (at_ < text_.size() && text_[at_] == '-') ++at_;
    const std::size_t start = at_;
    while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') ++at_;
    const std::size_t digits = at_ - start;
    if (digits == 0 || digits > kMaxDigits || (digits > 1 && text_[start] == '0')) return false;
    // A fraction or an exponent is for the parser.
    return at_ >= text_.size() || (text_[at_] != '.' && text_[at_] != 'e' && text_[at_] != 'E');
  }

  bool Word(std::string_view word) {
    if (text_.substr(at_, word.size()) != word) return false;
    at_ += word.size();
    return true;
  }

  // Any value; a string is decoded into `*capture` when there is one to capture.
  bool Value(In in, int depth, std::string* capture) {
    Space();
    if (at_ >= text_.size()) return false;
    switch (text_[at_]) {
      case '{':
        return Object(in, depth + 1);
      case '[':
        return Array(depth + 1);
      case '"': {
        std::string scratch;
        return String(capture != nullptr ? *capture : scratch);
      }
      case 't':
        return Word("true");
      case 'f':
        return Word("false");
      case 'n':
        return Word("null");
      default:
        return Number();
    }
  }

  bool Array(int depth) {
    if (depth > kMaxDepth || !Next('[')) return false;
    if (Next(']')) return true;
    do {
      if (!Value(In::kOther, depth, nullptr)) return false;
    } while (Next(','));
    return Next(']');
  }

  // An object whose members go to `in`'s fields.
  bool Object(In in, int depth) {
    if (depth > kMaxDepth || !Next('{')) return false;
    if (Next('}')) return true;
    std::vector<std::string> names;
    do {
      Space();
      std::string name;
      if (names.size() == kMaxMembers || !String(name) || !Next(':')) return false;
      for (const std::string& seen : names) {
        if (seen == name) return false;  // the parser refuses it; let it say so
      }
      names.push_back(name);
      Space();
      const bool is_string = at_ < text_.size() && text_[at_] == '"';
      const bool is_object = at_ < text_.size() && text_[at_] == '{';
      std::string* capture = nullptr;
      In inner = In::kOther;
      if (in == In::kTop) {
        if (name == "method") capture = &fields_->method;
        if (name == "uri") capture = &fields_->uri;
        if (name == "requestId") capture = &fields_->request_id;
        if (name == "client" && is_object) inner = In::kClient;
      } else if (in == In::kClient) {
        if (name == "clientId") capture = &fields_->client_id;
        if (name == "credential" && is_object) inner = In::kCredential;
      } else if (in == In::kCredential) {
        if (name == "bearer") capture = &fields_->bearer;
        if (name == "onBehalfOf") fields_->on_behalf = true;
      }
      if (!Value(inner, depth, is_string ? capture : nullptr)) return false;
    } while (Next(','));
    return Next('}');
  }

  std::string_view text_;
  std::size_t at_ = 0;
  RequestFields* fields_ = nullptr;
};

// `text` as a JSON string: ", \ and control characters escaped, the rest as it is.
void AppendString(std::string& out, std::string_view text) {
  out += '"';
  std::size_t run = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text.substr(run, i - run));
    run = i + 1;
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  out.append(text.substr(run));
  out += '"';
}

// ,"name":"value" (or {"name":"value" as the first member, with `first`).
void AppendMember(std::string& out, std::string_view name, std::string_view value,
                  bool first = false) {
  out += first ? "{\"" : ",\"";
  out += name;
  out += "\":";
  AppendString(out, value);
}

}  // namespace

std::optional<RequestFields> ReadPlainRequest(std::string_view json) {
  RequestFields fields;
  PlainReader reader(json);
  if (!reader.Read(fields)) return std::nullopt;
  return fields;
}

std::string Iso8601Micro(std::int64_t ms) {
  std::int64_t seconds = ms / 1000;
  std::int64_t millis = ms % 1000;
  if (millis < 0) {
    millis += 1000;
    --seconds;
  }
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  std::array<char, 48> text{};
  const int n = std::snprintf(text.data(), text.size(), "%04d-%02d-%02dT%02d:%02d:%02d.%03d000Z",
                              utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                              utc.tm_min, utc.tm_sec, static_cast<int>(millis));
  return std::string(text.data(), n > 0 ? static_cast<std::size_t>(n) : 0);
}

std::string RetrievedKeyAnswer(std::string_view request_id, const KeyRecord& key,
                               std::span<const std::uint8_t> material) {
  std::string k = jose::Base64UrlEncode(material);
  std::string out;
  out.reserve(512 + key.uri.size() * 2 + request_id.size());
  out += "{\"status\":200";
  AppendMember(out, "requestId", request_id);
  out += ",\"key\":";
  AppendMember(out, "uri", key.uri, /*first=*/true);
  out += ",\"jwk\":";
  AppendMember(out, "kty", "oct", /*first=*/true);
  AppendMember(out, "kid", key.uri);
  AppendMember(out, "k", k);
  out += '}';
  ZeroizeString(k);
  AppendMember(out, "userId", key.creator);
  AppendMember(out, "clientId", key.client_id);
  AppendMember(out, "createDate", Iso8601Micro(key.created_ms));
  if (key.resource_uri) {
    AppendMember(out, "resourceUri", *key.resource_uri);
    AppendMember(out, "bindDate", Iso8601Micro(key.bound_ms.value_or(0)));
    AppendMember(out, "expirationDate", Iso8601Micro(key.stop_encrypt_ms.value_or(0)));
  } else {
    AppendMember(out, "expirationDate", Iso8601Micro(key.bind_deadline_ms));
  }
  out += "}}";
  return out;
}

}  // namespace strongroom::kms
