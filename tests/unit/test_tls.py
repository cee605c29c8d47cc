"""TLS: the self-signed certificate and the server context."""

import os

import pytest

from mailsuite.tls import TLSError, ensure_self_signed, load_context_factory


def test_self_signed_certificate_is_made_once(tmp_path):
    """The generated certificate is reused on the next start, and its key is private."""
    cert, key = ensure_self_signed(str(tmp_path), "mail.example.test")
    first = open(cert, "rb").read()
    assert ensure_self_signed(str(tmp_path), "mail.example.test") == (cert, key)
    assert open(cert, "rb").read() == first
    assert os.stat(key).st_mode & 0o077 == 0


def _handshake(server_context, *, client_max_version):
    """Run a TLS handshake in memory; True if it completes."""
    from OpenSSL import SSL

    client_context = SSL.Context(SSL.TLS_METHOD)
    client_context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    client_context.set_max_proto_version(client_max_version)
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error:
                return False
        for source, sink in ((client, server), (server, client)):
            try:
                sink.bio_write(source.bio_read(65536))
            except SSL.WantReadError:
                pass
    return client.get_protocol_version_name() != "Unknown" and server.get_cipher_name() is not None


def test_context_factory_speaks_tls12_and_refuses_tls11(tmp_path):
    """A certificate with its key yields a context that completes TLS 1.2 but refuses 1.1."""
    from OpenSSL import SSL

    cert, key = ensure_self_signed(str(tmp_path), "mail.example.test")
    context = load_context_factory(cert, key).getContext()
    assert _handshake(context, client_max_version=SSL.TLS1_2_VERSION)
    assert not _handshake(context, client_max_version=SSL.TLS1_1_VERSION)


def test_mismatched_key_is_refused(tmp_path):
    """A key that does not belong to the certificate is a TLSError, not a failed handshake later."""
    cert, _ = ensure_self_signed(str(tmp_path / "a"), "a.test")
    _, other_key = ensure_self_signed(str(tmp_path / "b"), "b.test")
    with pytest.raises(TLSError):
        load_context_factory(cert, other_key)


def test_garbage_is_refused(tmp_path):
    """A file that is not PEM is a TLSError naming it."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(TLSError) as raised:
        load_context_factory(str(junk), str(junk))
    assert str(junk) in str(raised.value)
