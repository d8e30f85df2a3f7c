#include "strongroom/common/strict_json.h"

#include <Poco/JSON/JSONException.h>
#include <Poco/JSON/ParseHandler.h>
#include <Poco/JSON/Parser.h>

#include <set>
#include <string>
#include <vector>

namespace strongroom {
namespace {

// Poco's handler, keeping the names seen in each open object (arrays open none).
class StrictHandler : public Poco::JSON::ParseHandler {
 public:
  void startObject() override {
    names_.emplace_back();
    ParseHandler::startObject();
  }
  void endObject() override {
    names_.pop_back();
    ParseHandler::endObject();
  }
  void key(const std::string& k) override {
    if (!names_.back().insert(k).second) throw DuplicateName();
    ParseHandler::key(k);
  }
  void reset() override {
    names_.clear();
    ParseHandler::reset();
  }

  struct DuplicateName {};

 private:
  std::vector<std::set<std::string>> names_;
};

}  // namespace

Result<Poco::JSON::Object::Ptr> ParseStrictJsonObject(std::string_view text) {
  try {
    Poco::JSON::Parser parser(new StrictHandler);
    Poco::Dynamic::Var parsed = parser.parse(std::string(text));
    if (parsed.type() == typeid(Poco::JSON::Object::Ptr)) {
      Poco::JSON::Object::Ptr object = parsed.extract<Poco::JSON::Object::Ptr>();
      if (!object.isNull()) return object;
    }
  } catch (const StrictHandler::DuplicateName&) {
    return Error(ErrorCode::kInvalidArgument, "a member name appears twice in one JSON object");
  } catch (const Poco::Exception&) {
  } catch (const std::exception&) {
  }
  return Error(ErrorCode::kInvalidArgument, "not a JSON object");
}

}  // namespace strongroom
