"""The KMS protocol's client side done by an independent JOSE implementation, against kmsd.

Run by tests/kms/jwcrypto_client_test.sh (CTest) with a running kmsd:

  /usr/bin/python3 jwcrypto_client_test.py --url https://127.0.0.1:PORT --ca CA.pem \
      --token-file ALICE.jwt [--other-token-file BOB_OF_ANOTHER_ORG.jwt]

Everything on the client side is python3-jwcrypto, python3-cryptography and the standard
library (http.client over ssl, json, uuid); nothing of Strongroom's own code. Steps:
GET /kms/info (the x5c leaf certifies rsaPublicKey and is signed by the CA), create /ecdhe
(JWE RSA-OAEP/A256GCM, PS256 answer verified, a tampered copy refused), the shared key by
ECDH + HKDF-SHA256 (empty salt and info, 32 bytes), then dir/A256GCM: ping, create keys,
create a resource binding one, retrieve it, refuse it to another organization's user, delete
the ephemeral key, and prove the deleted key is refused.

Prints one "ok: <step>" line per step; exits 1 on the first failure. Never prints a key, a
token or a plaintext. A missing jwcrypto is a failure (exit 1), not a skip.
"""
import argparse
import base64
import http.client
import json
import ssl
import sys
import urllib.parse
import uuid

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from jwcrypto import jwe, jwk, jws
    from jwcrypto.common import base64url_decode, json_encode
except ImportError as missing:  # the test must fail, not skip
    print("FAIL: python3-jwcrypto and python3-cryptography are required: %s" % missing)
    sys.exit(1)


class Failure(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failure(what)


class Kms:
    """One keep-alive HTTPS connection to kmsd, verified against the test CA."""

    def __init__(self, url, ca):
        parsed = urllib.parse.urlsplit(url)
        check(parsed.scheme == "https" and parsed.hostname, "--url must be https://host:port")
        context = ssl.create_default_context(cafile=ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.connection = http.client.HTTPSConnection(
            parsed.hostname, parsed.port, context=context, timeout=60)

    def request(self, method, path, body=None):
        headers = {"Content-Type": "application/jose"} if body is not None else {}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
        return response.status, content_type, data


def b64std(text):
    return base64.b64decode(text, validate=True)


def check_info(kms, ca_path):
    status, content_type, body = kms.request("GET", "/kms/info")
    check(status == 200 and content_type == "application/json", "GET /kms/info: %d" % status)
    info = json.loads(body)
    cluster = info["kmsCluster"]
    check(cluster.startswith("kms://"), "kmsCluster is a kms:// URI")
    rsa_json = info["rsaPublicKey"]
    check(rsa_json.get("kty") == "RSA", "rsaPublicKey is an RSA JWK")
    check("d" not in rsa_json and "p" not in rsa_json, "rsaPublicKey holds no private part")
    rsa_key = jwk.JWK(**{k: v for k, v in rsa_json.items() if k != "x5c"})
    check(not rsa_key.has_private, "rsaPublicKey is public")

    # The x5c leaf certifies exactly this key, and the test CA signed the leaf.
    chain = [x509.load_der_x509_certificate(b64std(c)) for c in rsa_json.get("x5c", [])]
    check(len(chain) >= 1, "rsaPublicKey carries an x5c chain")
    leaf_numbers = chain[0].public_key().public_numbers()
    n = int.from_bytes(base64url_decode(rsa_json["n"]), "big")
    e = int.from_bytes(base64url_decode(rsa_json["e"]), "big")
    check(leaf_numbers.n == n and leaf_numbers.e == e,
          "the x5c leaf's public key is rsaPublicKey")
    with open(ca_path, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    issuer = chain[1] if len(chain) > 1 else ca
    check(issuer.public_key().public_numbers() == ca.public_key().public_numbers(),
          "the chain ends at the test CA")
    issuer.public_key().verify(chain[0].signature, chain[0].tbs_certificate_bytes,
                               ec.ECDSA(chain[0].signature_hash_algorithm))
    print("ok: GET /kms/info, x5c leaf certifies rsaPublicKey, signed by the CA")
    return cluster, rsa_key


def create_ecdhe(kms, cluster, rsa_key, bearer):
    mine = ec.generate_private_key(ec.SECP256R1())
    my_jwk = json.loads(jwk.JWK.from_pyca(mine.public_key()).export_public())
    request_id = "jwcrypto-" + str(uuid.uuid4())
    request = {
        "client": {"clientId": "jwcrypto-client", "credential": {"bearer": bearer}},
        "method": "create",
        "uri": "/ecdhe",
        "requestId": request_id,
        "jwk": my_jwk,
    }
    token = jwe.JWE(json_encode(request).encode(),
                    protected=json_encode({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": cluster}))
    token.add_recipient(rsa_key)
    status, content_type, body = kms.request("POST", "/kms/messages",
                                             token.serialize(compact=True))
    check(status == 200 and content_type == "application/jose",
          "create /ecdhe answered HTTP %d %s" % (status, content_type))

    signed = jws.JWS()
    signed.deserialize(body.decode())
    signed.verify(rsa_key, alg="PS256")
    check(json.loads(signed.objects["protected"])["alg"] == "PS256", "the answer is PS256")
    answer = json.loads(signed.payload)
    check(answer.get("status") == 201, "create /ecdhe status %s" % answer.get("status"))
    check(answer.get("requestId") == request_id, "the answer is for our request")
    key = answer["key"]
    ephemeral_uri = key["uri"]
    check(ephemeral_uri.startswith(cluster + "/ecdhe/"), "the ephemeral key is the KMS's")

    # A tampered answer does not verify.
    head, payload, signature = body.decode().split(".")
    forged = base64.urlsafe_b64encode(
        json.dumps(dict(answer, status=200)).encode()).rstrip(b"=").decode()
    tampered = jws.JWS()
    tampered.deserialize(".".join([head, forged, signature]))
    try:
        tampered.verify(rsa_key, alg="PS256")
        raise Failure("a tampered create /ecdhe answer verified")
    except jws.InvalidJWSSignature:
        pass
    print("ok: create /ecdhe (RSA-OAEP/A256GCM), PS256 answer verified, tampered copy refused")

    theirs_jwk = jwk.JWK(**key["jwk"])
    check(theirs_jwk.get("kty") == "EC" and theirs_jwk.get("crv") == "P-256",
          "the KMS's ephemeral key is EC P-256")
    theirs = ec.EllipticCurvePublicNumbers(
        int.from_bytes(base64url_decode(key["jwk"]["x"]), "big"),
        int.from_bytes(base64url_decode(key["jwk"]["y"]), "big"), ec.SECP256R1()).public_key()
    secret = mine.exchange(ec.ECDH(), theirs)
    shared = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=b"").derive(secret)
    print("ok: shared key from ECDH + HKDF-SHA256 (empty salt and info, 32 bytes)")
    return ephemeral_uri, jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(shared).rstrip(
        b"=").decode())


class Channel:
    """Sealed dir/A256GCM requests under the ephemeral key."""

    def __init__(self, kms, uri, key, bearer):
        self.kms, self.uri, self.key, self.bearer, self.count = kms, uri, key, bearer, 0

    def seal(self, method, uri, **fields):
        self.count += 1
        request_id = "jwcrypto-%d" % self.count
        request = dict(fields, client={"clientId": "jwcrypto-client",
                                       "credential": {"bearer": self.bearer}},
                       method=method, uri=uri, requestId=request_id)
        token = jwe.JWE(json_encode(request).encode(),
                        protected=json_encode({"alg": "dir", "enc": "A256GCM", "kid": self.uri}))
        token.add_recipient(self.key)
        return request_id, token.serialize(compact=True)

    def call(self, method, uri, **fields):
        request_id, message = self.seal(method, uri, **fields)
        return self.deliver(request_id, message, "%s %s" % (method, uri))

    def deliver(self, request_id, message, what):
        status, content_type, body = self.kms.request("POST", "/kms/messages", message)
        check(status == 200 and content_type == "application/jose",
              "%s answered HTTP %d %s" % (what, status, content_type))
        token = jwe.JWE()
        token.allowed_algs = ["dir", "A256GCM"]
        token.deserialize(body.decode(), key=self.key)
        header = json.loads(token.objects["protected"])
        check(header.get("alg") == "dir" and header.get("enc") == "A256GCM",
              "the answer is dir/A256GCM")
        check(header.get("kid") == self.uri, "the answer is sealed under our ephemeral key")
        answer = json.loads(token.payload)
        check(answer.get("requestId") == request_id, "the answer is for our request")
        return answer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--other-token-file")
    args = parser.parse_args()
    with open(args.token_file) as f:
        bearer = f.read().strip()

    kms = Kms(args.url, args.ca)
    cluster, rsa_key = check_info(kms, args.ca)
    ephemeral_uri, key = create_ecdhe(kms, cluster, rsa_key, bearer)
    channel = Channel(kms, ephemeral_uri, key, bearer)

    ping = channel.call("update", "/ping")
    check(ping["status"] == 200, "update /ping status %s" % ping["status"])
    print("ok: update /ping (dir/A256GCM both ways)")

    created = channel.call("create", "/keys", count=2)
    check(created["status"] == 201, "create /keys status %s" % created["status"])
    keys = created["keys"]
    check(len(keys) == 2, "create /keys made 2 keys")
    for k in keys:
        check(k["uri"].startswith(cluster + "/keys/"), "a key URI of this KMS")
        check(k["jwk"]["kty"] == "oct" and k["jwk"]["kid"] == k["uri"], "an oct JWK named by uri")
        check(len(base64url_decode(k["jwk"]["k"])) == 32, "a 256-bit key")
    check(keys[0]["jwk"]["k"] != keys[1]["jwk"]["k"], "two different keys")
    print("ok: create /keys count 2")

    resource = channel.call("create", "/resources", authIds=[], keyUris=[keys[0]["uri"]])
    check(resource["status"] == 201, "create /resources status %s" % resource["status"])
    check(resource["resource"]["keyUris"] == [keys[0]["uri"]], "the resource binds the key")
    print("ok: create /resources binding the key")

    retrieved = channel.call("retrieve", keys[0]["uri"])
    check(retrieved["status"] == 200, "retrieve /keys status %s" % retrieved["status"])
    check(retrieved["key"]["jwk"]["k"] == keys[0]["jwk"]["k"], "the same key material")
    check(retrieved["key"].get("resourceUri") == resource["resource"]["uri"],
          "the key is bound to the resource")
    unknown = channel.call("retrieve", cluster + "/keys/" + str(uuid.uuid4()))
    check(unknown["status"] == 403, "an unknown key is refused (403), got %s" % unknown["status"])
    print("ok: retrieve the bound key; an unknown key is refused")

    if args.other_token_file:
        with open(args.other_token_file) as f:
            other_bearer = f.read().strip()
        other_uri, other_key = create_ecdhe(kms, cluster, rsa_key, other_bearer)
        other = Channel(kms, other_uri, other_key, other_bearer)
        refused = other.call("retrieve", keys[0]["uri"])
        check(refused["status"] == 403,
              "another organization's user got status %s" % refused["status"])
        check("key" not in refused, "no key material in a refusal")
        # The other user's bearer on our channel is refused too.
        stolen = Channel(kms, ephemeral_uri, key, other_bearer)
        request_id, message = stolen.seal("retrieve", keys[0]["uri"])
        status, content_type, body = kms.request("POST", "/kms/messages", message)
        if content_type == "application/jose":
            token = jwe.JWE()
            token.deserialize(body.decode(), key=key)
            check(json.loads(token.payload)["status"] in (401, 403),
                  "another user's bearer on our channel is refused")
        else:
            check(status in (401, 403), "another user's bearer on our channel is refused")
        print("ok: another organization's user is refused the key")

    # The core may keep a sealed message and send it again: the KMS executes it once.
    request_id, message = channel.seal("create", "/keys", count=1)
    check(channel.deliver(request_id, message, "create /keys")["status"] == 201, "first delivery")
    again = channel.deliver(request_id, message, "create /keys again")
    check(again["status"] == 409 and again.get("reason") == "replayed request",
          "a second delivery answered %s" % again)
    print("ok: the same sealed message delivered twice is refused the second time (409)")

    deleted = channel.call("delete", ephemeral_uri)
    check(deleted["status"] == 204, "delete /ecdhe status %s" % deleted["status"])
    print("ok: delete the ephemeral key")

    _, message = channel.seal("update", "/ping")
    status, content_type, body = kms.request("POST", "/kms/messages", message)
    check(status == 401 and content_type == "application/jose",
          "the deleted key answered HTTP %d %s" % (status, content_type))
    # draft-02, Error Messages: an unencrypted JWS signed with the KMS's static key.
    refusal = jws.JWS()
    refusal.deserialize(body.decode())
    refusal.verify(rsa_key, alg="PS256")
    check(json.loads(refusal.objects["protected"]).get("kid") == cluster,
          "the refusal is signed by the static key")
    error = json.loads(refusal.payload)
    check(error.get("status") == 401 and error.get("reason"), "the refusal is {status, reason}")
    print("ok: a message under the deleted key is refused (signed JWS, 401 %s)" % error["reason"])
    print("PASS")


if __name__ == "__main__":
    try:
        main()
    except Failure as failure:
        print("FAIL: %s" % failure)
        sys.exit(1)
    except Exception as unexpected:  # noqa: BLE001 -- any other failure is a failed test too
        print("FAIL: %s: %s" % (type(unexpected).__name__, unexpected))
        sys.exit(1)
