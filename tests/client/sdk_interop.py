"""What the SDK encrypts, opened by standard libraries (run by content_test.cc).

Content (text and file references) must open with python3-jwcrypto given the conversation key,
and an encrypted file with any AES-256-GCM (here python3-cryptography) given its reference.

Reads one JSON object on stdin:
  key            base64url 32-byte conversation key (a throwaway test key)
  wrong_key      base64url of another 32-byte key
  text_jwe       compact dir/A256GCM JWE of a message, made by the SDK
  text_expected  base64url of the message
  ref_jwe        the sealed file reference, made by the SDK
  blob_path      the encrypted file as it would be uploaded
  file_sha256    hex SHA-256 of the original file
Writes "name=value" lines on stdout; never prints a key or a plaintext.
"""
import hashlib
import json
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwcrypto import jwe, jwk
from jwcrypto.common import base64url_decode


def open_jwe(token, key):
    opened = jwe.JWE()
    opened.allowed_algs = ["dir", "A256GCM"]
    opened.deserialize(token, key=key)
    return opened


def main():
    request = json.load(sys.stdin)
    key = jwk.JWK(kty="oct", k=request["key"])
    wrong = jwk.JWK(kty="oct", k=request["wrong_key"])

    text = open_jwe(request["text_jwe"], key)
    header = json.loads(text.objects["protected"])
    ok = text.payload == base64url_decode(request["text_expected"])
    print("text_ok=%s" % ("true" if ok else "false"))
    print("text_alg=%s" % header.get("alg"))
    print("text_enc=%s" % header.get("enc"))
    print("text_kid=%s" % header.get("kid"))
    try:
        open_jwe(request["text_jwe"], wrong)
        print("wrong_key_rejected=false")
    except Exception:  # jwcrypto raises InvalidJWEData
        print("wrong_key_rejected=true")

    reference = json.loads(open_jwe(request["ref_jwe"], key).payload)
    print("ref_enc=%s" % reference.get("enc"))
    print("ref_loc=%s" % reference.get("loc"))
    with open(request["blob_path"], "rb") as blob:
        sealed = blob.read()
    plain = AESGCM(base64url_decode(reference["key"])).decrypt(
        base64url_decode(reference["iv"]),
        sealed + base64url_decode(reference["tag"]),
        reference["aad"].encode("utf-8"),
    )
    ok = hashlib.sha256(plain).hexdigest() == request["file_sha256"]
    print("file_ok=%s" % ("true" if ok else "false"))


if __name__ == "__main__":
    main()
