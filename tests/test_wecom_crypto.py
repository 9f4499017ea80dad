"""WeCom's callback crypto against the official WXBizMsgCrypt sample vectors
(developer.work.weixin.qq.com/document/path/90968 and the samples shipped with it),
and the GCJ-02 → WGS-84 conversion against known points."""
from __future__ import annotations

import base64

import pytest

from bot.wecom.crypto import CryptoError, MsgCrypt, signature
from models.geo import gcj_to_wgs, wgs_to_gcj

TOKEN = "QDG6eK"
CORP_ID = "wx5823bf96d3bd56c7"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"

# sample 1: URL verification (GET)
VERIFY = dict(msg_signature="5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", timestamp="1409659589",
              nonce="263014780",
              echostr="P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==")
ECHO_PLAIN = "1616140317555161061"

# sample 2: a member's message (POST)
POST = dict(msg_signature="477715d11cdb4164915debcba66cb864d751f3e6", timestamp="1409659813",
            nonce="1372623149")
ENCRYPTED = ("RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3Q"
             "czcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48k"
             "zJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izo"
             "un1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUa"
             "x5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5P"
             "l/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==")
PLAIN = ("<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n"
         "<FromUserName><![CDATA[mycreate]]></FromUserName>\n"
         "<CreateTime>1409659813</CreateTime>\n"
         "<MsgType><![CDATA[text]]></MsgType>\n"
         "<Content><![CDATA[hello]]></Content>\n"
         "<MsgId>4561255354251345929</MsgId>\n"
         "<AgentID>218</AgentID>\n"
         "</xml>")


def crypt(**kwargs) -> MsgCrypt:
    return MsgCrypt(TOKEN, AES_KEY, CORP_ID, **kwargs)


def random_prefix(ciphertext: str) -> bytes:
    """The 16 random bytes the sample was encrypted with (read back by decrypting)."""
    c = crypt()
    decryptor = c._cipher().decryptor()
    return (decryptor.update(base64.b64decode(ciphertext)) + decryptor.finalize())[:16]


def test_url_verification_sample_decrypts_to_its_echo():
    assert crypt().verify_url(**VERIFY) == ECHO_PLAIN


def test_message_sample_verifies_and_decrypts():
    assert crypt().decrypt_message(encrypted=ENCRYPTED, **POST) == PLAIN


def test_signatures_of_the_samples():
    assert signature(TOKEN, VERIFY["timestamp"], VERIFY["nonce"], VERIFY["echostr"]) \
        == VERIFY["msg_signature"]
    assert signature(TOKEN, POST["timestamp"], POST["nonce"], ENCRYPTED) == POST["msg_signature"]


@pytest.mark.parametrize("ciphertext,plain", [(ENCRYPTED, PLAIN), (VERIFY["echostr"], ECHO_PLAIN)])
def test_encryption_reproduces_the_sample_ciphertext(ciphertext, plain):
    prefix = random_prefix(ciphertext)
    asked = []

    def random_bytes(n: int) -> bytes:
        asked.append(n)
        return prefix[:n]
    assert crypt(random_bytes=random_bytes).encrypt(plain) == ciphertext
    assert asked == [16]


def test_round_trip_of_a_long_chinese_message():
    message = "<xml><Content><![CDATA[" + "路灯坏了" * 300 + "]]></Content></xml>"
    c = crypt()
    encrypted = c.encrypt(message)
    assert len(base64.b64decode(encrypted)) % 32 == 0
    assert c.decrypt_message(c.sign("1", "2", encrypted), "1", "2", encrypted) == message


def test_a_bad_signature_is_refused():
    forged = dict(POST, msg_signature="0" * 40)
    with pytest.raises(CryptoError, match="signature"):
        crypt().decrypt_message(encrypted=ENCRYPTED, **forged)
    with pytest.raises(CryptoError, match="signature"):  # a changed nonce breaks it too
        crypt().decrypt_message(encrypted=ENCRYPTED, **dict(POST, nonce="1372623150"))


def test_another_corp_id_is_refused():
    other = MsgCrypt(TOKEN, AES_KEY, "wwsomeoneelse")
    with pytest.raises(CryptoError, match="receive id"):
        other.decrypt_message(encrypted=ENCRYPTED, **POST)


@pytest.mark.parametrize("ciphertext,reason", [
    ("not base64!", "base64"),
    (base64.b64encode(b"x" * 15).decode(), "length"),
    (base64.b64encode(b"x" * 32).decode(), "padding"),
])
def test_garbage_ciphertext_is_refused(ciphertext, reason):
    c = crypt()
    with pytest.raises(CryptoError, match=reason):
        c.decrypt_message(c.sign("1", "2", ciphertext), "1", "2", ciphertext)


def test_a_length_pointing_past_the_end_is_refused():
    c = crypt(random_bytes=lambda n: b"\0" * n)
    good = base64.b64decode(c.encrypt("hi"))
    decryptor = c._cipher().decryptor()
    plain = bytearray(decryptor.update(good) + decryptor.finalize())
    plain[16:20] = (10_000).to_bytes(4, "big")
    encryptor = c._cipher().encryptor()
    forged = base64.b64encode(encryptor.update(bytes(plain)) + encryptor.finalize()).decode()
    with pytest.raises(CryptoError, match="length"):
        c.decrypt(forged)


@pytest.mark.parametrize("key", ["short", AES_KEY[:-1] + "!"])
def test_a_bad_encoding_aes_key_is_refused(key):
    with pytest.raises(CryptoError):
        MsgCrypt(TOKEN, key, CORP_ID)


# ---- GCJ-02 ---------------------------------------------------------------------------

def test_gcj_offset_of_a_known_beijing_point():
    # Tiananmen: WGS-84 39.90734, 116.39089 shows on Chinese maps at 39.90874, 116.39713
    lat, lon = wgs_to_gcj(39.90734, 116.39089)
    assert (round(lat, 5), round(lon, 5)) == (39.90874, 116.39713)
    back = gcj_to_wgs(39.90874, 116.39713)
    assert abs(back[0] - 39.90734) < 1e-5 and abs(back[1] - 116.39089) < 1e-5


@pytest.mark.parametrize("point", [(39.93085, 116.41298), (31.2304, 121.4737), (22.5431, 114.0579),
                                   (45.8038, 126.5349)])
def test_inverse_undoes_the_forward_transform_to_a_centimetre(point):
    back = gcj_to_wgs(*wgs_to_gcj(*point))
    assert abs(back[0] - point[0]) < 1e-7 and abs(back[1] - point[1]) < 1e-7


def test_outside_china_nothing_moves():
    assert gcj_to_wgs(51.5007, -0.1246) == (51.5007, -0.1246)
    assert wgs_to_gcj(35.6586, 139.7454) == (35.6586, 139.7454)
