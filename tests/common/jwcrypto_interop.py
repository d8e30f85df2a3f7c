"""Interoperability of strongroom::jose with python3-jwcrypto (run by jose_test.cc).

Reads one JSON object on stdin:
  dir_key          base64url 32-byte key (a throwaway test key)
  dir_jwe          compact dir/A256GCM JWE made by Strongroom
  dir_expected     base64url of the plaintext dir_jwe must hold
  reply_plaintext  base64url of the plaintext to encrypt for Strongroom
  es256_jws        compact ES256 JWS signed by Strongroom
  es256_jwk        its public JWK (a JSON object)
  es256_payload    base64url of the payload es256_jws must carry
Writes "name=value" lines on stdout; never prints a key or a plaintext.
"""
import json
import sys

from jwcrypto import jwe, jwk, jws
from jwcrypto.common import base64url_decode, base64url_encode, json_encode


def main():
    request = json.load(sys.stdin)
    key = jwk.JWK(kty="oct", k=request["dir_key"])

    # (a) decrypt Strongroom's dir/A256GCM JWE.
    token = jwe.JWE()
    token.allowed_algs = ["dir", "A256GCM"]
    token.deserialize(request["dir_jwe"], key=key)
    header = json.loads(token.objects["protected"])
    decrypted_ok = token.payload == base64url_decode(request["dir_expected"])
    print("dir_decrypt_ok=%s" % ("true" if decrypted_ok else "false"))
    print("dir_header_alg=%s" % header.get("alg"))
    print("dir_header_kid=%s" % header.get("kid"))

    # (b) encrypt one for Strongroom.
    reply = jwe.JWE(
        base64url_decode(request["reply_plaintext"]),
        protected=json_encode({"alg": "dir", "enc": "A256GCM", "kid": "from-jwcrypto"}),
    )
    reply.add_recipient(key)
    print("reply_jwe=%s" % reply.serialize(compact=True))

    # (c) verify Strongroom's ES256 JWS, and that a tampered copy fails.
    public_key = jwk.JWK(**request["es256_jwk"])
    signed = jws.JWS()
    signed.deserialize(request["es256_jws"])
    signed.verify(public_key, alg="ES256")
    payload_ok = signed.payload == base64url_decode(request["es256_payload"])
    print("es256_verified=%s" % ("true" if payload_ok else "false"))

    head, _, signature = request["es256_jws"].split(".")
    tampered = jws.JWS()
    tampered.deserialize(".".join([head, base64url_encode(b"tampered"), signature]))
    try:
        tampered.verify(public_key, alg="ES256")
        print("es256_tampered_rejected=false")
    except jws.InvalidJWSSignature:
        print("es256_tampered_rejected=true")


if __name__ == "__main__":
    main()
