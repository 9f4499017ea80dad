"""WeCom's callback encryption (the WXBizMsgCrypt scheme), written from its documentation.

Signature: SHA-1 over the sorted token, timestamp, nonce and ciphertext. Cipher:
AES-256-CBC, key = base64(EncodingAESKey + "="), IV = the key's first 16 bytes, PKCS#7
padding to 32-byte blocks. Plaintext: 16 random bytes, the message length as 4 bytes
big-endian, the message, the receive id (the corp id)."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32  # WeCom pads to 32 bytes, not AES's 16


class CryptoError(ValueError):
    """A request that fails verification or decryption; the message says why."""


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode()).hexdigest()


class MsgCrypt:
    """Verify, decrypt and encrypt for one app. ``random_bytes(n)`` is injectable so a
    test can reproduce a known ciphertext."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str,
                 random_bytes: Callable[[int], bytes] = os.urandom):
        if len(encoding_aes_key) != 43:
            raise CryptoError("EncodingAESKey must be 43 characters")
        try:
            self.key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except binascii.Error as exc:
            raise CryptoError(f"EncodingAESKey is not base64: {exc}") from None
        if len(self.key) != 32:
            raise CryptoError("EncodingAESKey must decode to 32 bytes")
        self.token, self.receive_id, self.random_bytes = token, receive_id, random_bytes

    def check_signature(self, msg_signature: str, timestamp: str, nonce: str,
                        encrypted: str) -> None:
        expected = signature(self.token, timestamp, nonce, encrypted)
        if not hmac.compare_digest(expected, (msg_signature or "").lower()):
            raise CryptoError("bad signature")

    def decrypt(self, encrypted: str) -> str:
        """The message inside ``encrypted``; raises CryptoError if it is not ours."""
        try:
            data = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise CryptoError("ciphertext is not base64") from None
        if not data or len(data) % 16:
            raise CryptoError("ciphertext has a bad length")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise CryptoError("bad padding")
        plain = plain[:-pad]
        if len(plain) < 20:
            raise CryptoError("plaintext too short")
        (length,) = struct.unpack(">I", plain[16:20])
        if 20 + length > len(plain):
            raise CryptoError("bad message length")
        message, receive_id = plain[20:20 + length], plain[20 + length:]
        if receive_id.decode("utf-8", "replace") != self.receive_id:
            raise CryptoError("wrong receive id (corp id)")
        try:
            return message.decode("utf-8")
        except UnicodeDecodeError:
            raise CryptoError("message is not UTF-8") from None

    def encrypt(self, message: str) -> str:
        body = message.encode()
        plain = (self.random_bytes(16) + struct.pack(">I", len(body)) + body
                 + self.receive_id.encode())
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """GET verification: the plaintext of ``echostr``, to be answered as is."""
        self.check_signature(msg_signature, timestamp, nonce, echostr)
        return self.decrypt(echostr)

    def decrypt_message(self, msg_signature: str, timestamp: str, nonce: str,
                        encrypted: str) -> str:
        self.check_signature(msg_signature, timestamp, nonce, encrypted)
        return self.decrypt(encrypted)

    def sign(self, timestamp: str, nonce: str, encrypted: str) -> str:
        return signature(self.token, timestamp, nonce, encrypted)

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))
