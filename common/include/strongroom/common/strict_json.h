// JSON objects read strictly: a member name that appears twice in one object (at any depth) is
// refused. Poco's parser keeps the last, so {"count":1,"count":100} would mean 100 to kmsd and 1
// to a reader that keeps the first (a proxy, an audit tool): requests must mean one thing.
#ifndef STRONGROOM_COMMON_STRICT_JSON_H_
#define STRONGROOM_COMMON_STRICT_JSON_H_

#include <Poco/JSON/Object.h>

#include <string_view>

#include "strongroom/common/error.h"

namespace strongroom {

// The object `text` holds; INVALID_ARGUMENT when it is not one JSON object, or when a name repeats
// within one object (the message names neither the name nor any value: they may be secret).
Result<Poco::JSON::Object::Ptr> ParseStrictJsonObject(std::string_view text);

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_STRICT_JSON_H_
