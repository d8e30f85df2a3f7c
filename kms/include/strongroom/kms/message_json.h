// The JSON of the KMS's hot path, read and written directly: the fields of a sealed request every
// operation reads, and the answer to a key retrieval. Poco::JSON's objects and Dynamic::Vars cost a
// retrieval more than its AES-GCM (docs/benchmarks.md, issue 13); everything else stays on them.
//
// The reader takes only a request written plainly: ASCII, no escapes but \" \\ \/ \b \f \n \r \t
// and \u0020-\u007e, whole numbers of at most 15 digits, true, false, null, nesting at most 8 deep,
// at most 32 members in an object, each member name once in its object, one object and nothing
// after it. For any other text, valid
// JSON or not, it answers nullopt and the caller reads the request with the strict parser
// (strict_json.h) as before: a text it reads, that parser reads alike, and no text is refused here
// that the parser would take.
#ifndef STRONGROOM_KMS_MESSAGE_JSON_H_
#define STRONGROOM_KMS_MESSAGE_JSON_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {

// What every operation reads of a request. A member absent, or not a string, is "" (as the
// service reads them from the parsed object).
struct RequestFields {
  std::string method;
  std::string uri;
  std::string request_id;
  std::string client_id;   // client.clientId
  std::string bearer;      // client.credential.bearer
  bool on_behalf = false;  // client.credential has an onBehalfOf member (of any kind)
};

std::optional<RequestFields> ReadPlainRequest(std::string_view json);

// {"status":200,"requestId":...,"key":{"uri","jwk":{"kty":"oct","kid","k"},"userId","clientId",
// "createDate",["resourceUri","bindDate",]"expirationDate"}}: the members and values the
// service's Poco object of the same answer has (dates in its ISO 8601 form with microseconds).
// The result holds the key: the caller wipes it (ZeroizeString) once it is sealed.
std::string RetrievedKeyAnswer(std::string_view request_id, const KeyRecord& key,
                               std::span<const std::uint8_t> material);

// `ms` since the epoch as Poco's ISO8601_FRAC_FORMAT writes it: 2026-12-06T18:00:00.123000Z.
std::string Iso8601Micro(std::int64_t ms);

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_MESSAGE_JSON_H_
