#include <iostream>

#include "commands.h"
#include "output.h"
#include "profile.h"
#include "strongroom/common/jose/base64url.h"

namespace strongroom::cli {

Status Key(Args& args, const std::string& sub) {
  if (sub != "show") throw UsageError("key takes show");
  auto rest = args.Positional(1, 1, "key show KEY_URI");
  SR_ASSIGN_OR_RETURN(auto s, Connect());
  SR_ASSIGN_OR_RETURN(client::KmsKey key, s->kms->RetrieveKey(rest[0]));
  Poco::JSON::Object::Ptr jwk = new Poco::JSON::Object;
  jwk->set("kty", "oct");
  jwk->set("kid", key.uri);
  jwk->set("k", jose::Base64UrlEncode(key.key.view()));
  std::cout << Json(jwk) << std::endl;
  return OkStatus();
}

}  // namespace strongroom::cli
