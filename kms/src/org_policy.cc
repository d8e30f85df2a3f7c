#include "strongroom/kms/org_policy.h"

#include <Poco/Data/RecordSet.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <set>
#include <sstream>

#include "strongroom/common/strict_json.h"

namespace strongroom::kms {
namespace {

using Poco::JSON::Object;

struct Range {
  const char* name;
  std::int64_t OrgPolicy::*field;
  std::int64_t min, max;
};

constexpr Range kRanges[] = {
    {"bindDeadlineSeconds", &OrgPolicy::bind_deadline_s, 60, 86400},
    {"encryptLifetimeSeconds", &OrgPolicy::encrypt_lifetime_s, 3600, 366 * 86400},
    {"ephemeralLifetimeSeconds", &OrgPolicy::ephemeral_lifetime_s, 60, 86400},
};

bool ValidUserId(const std::string& user) {
  return !user.empty() && user.size() <= 256 && std::none_of(user.begin(), user.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20;
  });
}

}  // namespace

bool OrgPolicy::IsComplianceOfficer(std::string_view user) const {
  return std::find(compliance_officers.begin(), compliance_officers.end(), user) !=
         compliance_officers.end();
}

Migration PolicyStore::Schema(int version) {
  return {version,
          "organization policies (compliance officers, indexer, key lifetimes)",
          {"CREATE TABLE org_policies (org TEXT PRIMARY KEY, policy TEXT NOT NULL, "
           "updated_ms INTEGER NOT NULL)"}};
}

Status PolicyStore::Validate(const OrgPolicy& policy) {
  if (policy.org.empty() || policy.org.size() > 128) {
    return Error(ErrorCode::kInvalidArgument, "the organization name is empty or too long");
  }
  if (policy.compliance_officers.size() > kMaxComplianceOfficers) {
    return Error(ErrorCode::kInvalidArgument, "complianceOfficers: at most 100");
  }
  std::set<std::string> seen;
  for (const std::string& officer : policy.compliance_officers) {
    if (!ValidUserId(officer) || !seen.insert(officer).second) {
      return Error(ErrorCode::kInvalidArgument,
                   "complianceOfficers: each a distinct user id of 1 to 256 characters");
    }
  }
  if (policy.indexer && !ValidUserId(*policy.indexer)) {
    return Error(ErrorCode::kInvalidArgument, "indexer: a user id of 1 to 256 characters");
  }
  if (policy.indexer_cloud_agent && !policy.indexer) {
    return Error(ErrorCode::kInvalidArgument, "indexerCloudAgent needs an indexer");
  }
  for (const Range& range : kRanges) {
    const std::int64_t value = policy.*range.field;
    if (value < range.min || value > range.max) {
      return Error(ErrorCode::kInvalidArgument, std::string(range.name) + ": " +
                                                    std::to_string(range.min) + " to " +
                                                    std::to_string(range.max));
    }
  }
  return OkStatus();
}

Result<OrgPolicy> PolicyStore::FromJson(std::string_view json, const std::string& org) {
  if (json.size() > kMaxPolicyJsonBytes) {
    return Error(ErrorCode::kInvalidArgument, "a policy is at most 64 KiB");
  }
  // Strictly: with a member twice, Poco would keep the last, and a reader of the request (a
  // review, a proxy) may see the first.
  Result<Object::Ptr> parsed = ParseStrictJsonObject(json);
  if (!parsed.ok()) {
    return Error(ErrorCode::kInvalidArgument,
                 "a policy is a JSON object with each member once: " + parsed.error().message());
  }
  const Object::Ptr object = *parsed;
  OrgPolicy policy;
  policy.org = org;
  static const std::set<std::string> kKnown = {
      "complianceOfficers",     "indexer",
      "indexerCloudAgent",      "bindDeadlineSeconds",
      "encryptLifetimeSeconds", "ephemeralLifetimeSeconds"};
  for (const auto& [name, value] : *object) {
    if (!kKnown.count(name)) return Error(ErrorCode::kInvalidArgument, "unknown member " + name);
  }
  if (object->has("complianceOfficers")) {
    Poco::JSON::Array::Ptr officers = object->getArray("complianceOfficers");
    if (!officers || officers->size() > kMaxComplianceOfficers) {
      return Error(ErrorCode::kInvalidArgument, "complianceOfficers: an array of at most 100");
    }
    for (unsigned i = 0; i < static_cast<unsigned>(officers->size()); ++i) {
      if (!officers->get(i).isString()) {
        return Error(ErrorCode::kInvalidArgument, "complianceOfficers: strings only");
      }
      policy.compliance_officers.push_back(officers->getElement<std::string>(i));
    }
  }
  if (object->has("indexer")) {
    if (!object->get("indexer").isString()) {
      return Error(ErrorCode::kInvalidArgument, "indexer: a string");
    }
    policy.indexer = object->getValue<std::string>("indexer");
  }
  if (object->has("indexerCloudAgent")) {
    if (!object->get("indexerCloudAgent").isBoolean()) {
      return Error(ErrorCode::kInvalidArgument, "indexerCloudAgent: true or false");
    }
    policy.indexer_cloud_agent = object->getValue<bool>("indexerCloudAgent");
  }
  for (const Range& range : kRanges) {
    if (!object->has(range.name)) continue;
    if (!object->get(range.name).isInteger()) {
      return Error(ErrorCode::kInvalidArgument, std::string(range.name) + ": a whole number");
    }
    policy.*range.field = object->getValue<std::int64_t>(range.name);
  }
  SR_RETURN_IF_ERROR(Validate(policy));
  return policy;
}

std::string PolicyStore::ToJson(const OrgPolicy& policy) {
  Object object(Poco::JSON_PRESERVE_KEY_ORDER);
  Poco::JSON::Array officers;
  for (const std::string& officer : policy.compliance_officers) officers.add(officer);
  object.set("org", policy.org);
  object.set("complianceOfficers", officers);
  if (policy.indexer) object.set("indexer", *policy.indexer);
  object.set("indexerCloudAgent", policy.indexer_cloud_agent);
  for (const Range& range : kRanges) object.set(range.name, policy.*range.field);
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

Result<OrgPolicy> PolicyStore::Get(Poco::Data::Session& s, const std::string& org) {
  std::vector<std::string> stored;
  {
    SqlStatement select = Database::Prepare(s, "SELECT policy FROM org_policies WHERE org = ?");
    if (select.Bind(org).Next()) stored.push_back(select.Text(0));
  }
  if (stored.empty()) {
    OrgPolicy defaults;
    defaults.org = org;
    return defaults;
  }
  // Written by Put after validation; the stored "org" member is informational.
  Poco::JSON::Parser parser;
  Object::Ptr object = parser.parse(stored.front()).extract<Object::Ptr>();
  object->remove("org");
  std::ostringstream out;
  object->stringify(out);
  Result<OrgPolicy> policy = FromJson(out.str(), org);
  if (!policy.ok()) {
    return Error(ErrorCode::kDataLoss,
                 "the stored policy of " + org + " is invalid: " + policy.error().message());
  }
  return policy;
}

Status PolicyStore::Put(Poco::Data::Session& s, const OrgPolicy& policy, std::int64_t now_ms) {
  SR_RETURN_IF_ERROR(Validate(policy));
  Database::Prepare(s,
                    "INSERT INTO org_policies (org, policy, updated_ms) VALUES (?, ?, ?) "
                    "ON CONFLICT (org) DO UPDATE SET policy = excluded.policy, "
                    "updated_ms = excluded.updated_ms")
      .Bind(policy.org)
      .Bind(ToJson(policy))
      .Bind(now_ms)
      .Run();
  return OkStatus();
}

}  // namespace strongroom::kms
