#!/usr/bin/env python3
"""gen_sasl_seeds.py - writes the fuzz_sasl seed corpus (corpus/fuzz_sasl/).

The SCRAM seeds hold complete exchanges whose proofs are valid for the
account fuzz_sasl.c sets up (user "user", password "pencil", salt
QSXCR+Q6sek8bf92, 64 iterations) and its fixed server nonce, so the
fuzzer starts from successful logins. Rerun after changing any of those."""
import base64, hashlib, hmac, os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_sasl")
SALT = base64.b64decode("QSXCR+Q6sek8bf92")
ITER = 64
SNONCE = "3rfcNHYJY1ZVvWVs7j"
EXPORTER = bytes(0xA0 + i for i in range(32))
ENDPOINT = bytes(0x10 + i for i in range(32))
MECH = {"SCRAM-SHA-1": b"0", "SCRAM-SHA-256": b"1", "SCRAM-SHA-1-PLUS": b"2",
        "SCRAM-SHA-256-PLUS": b"3", "PLAIN": b"4"}


def scram(mech, gs2, cbdata=b"", user="user", password="pencil", cnonce="fyko+d2lbbFgONRv9qkxdawL",
          tamper=False):
    h = hashlib.sha256 if "256" in mech else hashlib.sha1
    name = "sha256" if "256" in mech else "sha1"
    bare = "n=%s,r=%s" % (user, cnonce)
    nonce = cnonce + SNONCE
    sfirst = "r=%s,s=%s,i=%d" % (nonce, base64.b64encode(SALT).decode(), ITER)
    salted = hashlib.pbkdf2_hmac(name, password.encode(), SALT, ITER)
    ckey = hmac.new(salted, b"Client Key", h).digest()
    stored = h(ckey).digest()
    cfwp = "c=%s,r=%s" % (base64.b64encode(gs2.encode() + cbdata).decode(), nonce)
    auth = ",".join([bare, sfirst, cfwp]).encode()
    sig = hmac.new(stored, auth, h).digest()
    proof = bytes(a ^ b for a, b in zip(ckey, sig))
    if tamper:
        proof = bytes([proof[0] ^ 1]) + proof[1:]
    return [(gs2 + bare).encode(), (cfwp + ",p=" + base64.b64encode(proof).decode()).encode()]


def write(name, mech, cbflags, msgs):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(MECH[mech] + cbflags + b"\n" + b"\n".join(msgs))


os.makedirs(OUT, exist_ok=True)
write("scram-sha1-ok", "SCRAM-SHA-1", b"0", scram("SCRAM-SHA-1", "n,,"))
write("scram-sha256-ok", "SCRAM-SHA-256", b"1", scram("SCRAM-SHA-256", "n,,"))
write("scram-sha256-authzid-ok", "SCRAM-SHA-256", b"0", scram("SCRAM-SHA-256", "n,a=user@localhost,"))
write("scram-sha1-plus-exporter-ok", "SCRAM-SHA-1-PLUS", b"3",
      scram("SCRAM-SHA-1", "p=tls-exporter,,", EXPORTER))
write("scram-sha256-plus-endpoint-ok", "SCRAM-SHA-256-PLUS", b"7",
      scram("SCRAM-SHA-256", "p=tls-server-end-point,,", ENDPOINT))
write("scram-sha256-y-strict", "SCRAM-SHA-256", b"?", scram("SCRAM-SHA-256", "y,,"))
write("scram-sha256-wrong-password", "SCRAM-SHA-256", b"1", scram("SCRAM-SHA-256", "n,,", password="pencik"))
write("scram-sha1-bad-proof", "SCRAM-SHA-1", b"0", scram("SCRAM-SHA-1", "n,,", tamper=True))
write("scram-sha1-unknown-user", "SCRAM-SHA-1", b"0", scram("SCRAM-SHA-1", "n,,", user="bob"))
write("scram-escaped-user", "SCRAM-SHA-256", b"0",
      scram("SCRAM-SHA-256", "n,,", user="us=2Cer=3D\u00e9\u00df\u2163"))
write("scram-plus-wrong-binding", "SCRAM-SHA-256-PLUS", b"3",
      scram("SCRAM-SHA-256", "p=tls-exporter,,", ENDPOINT))
write("scram-extensions", "SCRAM-SHA-1", b"0",
      [b"n,,m=ext,n=user,r=abc", b"c=biws,r=abc" + SNONCE.encode() + b",x=1,p=AAAA"])
write("scram-empty-first", "SCRAM-SHA-1", b"0", [b"", b"n,,n=user,r=abc", b"c=biws,r=abc,p=="])
write("scram-garbage", "SCRAM-SHA-256", b"0", [b"p=,,n=,r=,", b"c=====,r=\xff\xfe,p=!!!"])
write("plain-ok", "PLAIN", b"1", [b"\x00user\x00pencil"])
write("plain-authzid", "PLAIN", b"1", [b"user@localhost\x00user\x00pencil"])
write("plain-wrong", "PLAIN", b"1", [b"\x00user\x00pencil2"])
write("plain-unknown", "PLAIN", b"1", [b"\x00nobody\x00pencil"])
write("plain-unicode", "PLAIN", b"1", ["\x00\u00c9MILE\x00p\u00e0ss\u00a0w\u00f6rd\u2163".encode()])
write("plain-no-tls", "PLAIN", b"0", [b"\x00user\x00pencil"])
write("plain-empty-then", "PLAIN", b"1", [b"", b"\x00user\x00pencil", b"again"])
write("credentials-text", "SCRAM-SHA-1", b"0",
      [b"v1 4096 QSXCR+Q6sek8bf92 AAAAAAAAAAAAAAAAAAAAAAAAAAA= AAAAAAAAAAAAAAAAAAAAAAAAAAA= "
       b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="])
