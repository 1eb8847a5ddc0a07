"""Writes a PKCS#12 file the way Azure Key Vault (and .NET, Windows) writes one without a
password: the MAC and the encrypted parts keyed with the *null* password (RFC 7292
appendix B.2: an empty string of bytes), not OpenSSL's "" (two zero bytes). OpenSSL's
PKCS12_create does exactly that when given a NULL password; called here through ctypes.
Usage: nullpass.py KEY.pem CERT.pem CHAIN.pem OUT.p12"""
import ctypes, sys

crypto = ctypes.CDLL("libcrypto.so.3")
P = ctypes.c_void_p
for name, res, args in [
    ("BIO_new_mem_buf", P, [ctypes.c_char_p, ctypes.c_int]),
    ("PEM_read_bio_PrivateKey", P, [P, P, P, P]),
    ("PEM_read_bio_X509", P, [P, P, P, P]),
    ("OPENSSL_sk_new_null", P, []),
    ("OPENSSL_sk_push", ctypes.c_int, [P, P]),
    ("PKCS12_create", P, [ctypes.c_char_p, ctypes.c_char_p, P, P, P,
                          ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]),
    ("i2d_PKCS12", ctypes.c_int, [P, ctypes.POINTER(ctypes.c_char_p)]),
]:
    fn = getattr(crypto, name)
    fn.restype, fn.argtypes = res, args


def bio(path):
    data = open(path, "rb").read()
    return crypto.BIO_new_mem_buf(data, len(data)), data


key_bio, _k = bio(sys.argv[1])
cert_bio, _c = bio(sys.argv[2])
chain_bio, _ch = bio(sys.argv[3])
key = crypto.PEM_read_bio_PrivateKey(key_bio, None, None, None)
cert = crypto.PEM_read_bio_X509(cert_bio, None, None, None)
chain = crypto.OPENSSL_sk_new_null()
while True:
    extra = crypto.PEM_read_bio_X509(chain_bio, None, None, None)
    if not extra:
        break
    crypto.OPENSSL_sk_push(chain, extra)
TRIPLE_DES = 146  # NID_pbe_WithSHA1And3_Key_TripleDES_CBC, what .NET and Key Vault use
p12 = crypto.PKCS12_create(None, b"app", key, cert, chain, TRIPLE_DES, TRIPLE_DES, 2000, 2000, 0)
assert p12, "PKCS12_create failed"
length = crypto.i2d_PKCS12(p12, None)
out = ctypes.create_string_buffer(length)
pointer = ctypes.c_char_p(ctypes.addressof(out))
crypto.i2d_PKCS12(p12, ctypes.byref(pointer))
open(sys.argv[4], "wb").write(out.raw[:length])
