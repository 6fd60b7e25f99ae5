//! From a libpq-style connection string to a connection: the keys
//! tokio-postgres knows, plus libpq's TLS keys (`sslmode` with
//! `verify-ca` / `verify-full`, `sslrootcert`, `sslcert`, `sslkey`) and
//! password sources (`passfile`, `PGPASSWORD`, `PGPASSFILE`,
//! `~/.pgpass`), which this crate implements itself.
//!
//! No value of the string is ever put into an error: a mistyped quote can
//! turn part of a password into a key or a value.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Config;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::PostgresJournalError;

/// libpq's `sslmode`: whether the connection is encrypted and what of the
/// server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum TlsMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, else plain (libpq's default). The
    /// certificate is not checked unless a root certificate is given.
    Prefer,
    /// TLS or no connection. The certificate is not checked unless a root
    /// certificate is given (then as `VerifyCa`), as libpq does.
    Require,
    /// TLS, the server's certificate chain checked against the root
    /// certificate; its host name is not.
    VerifyCa,
    /// TLS, the chain checked and the certificate made for the host
    /// connected to.
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Option<TlsMode> {
        Some(match value {
            "disable" => TlsMode::Disable,
            // libpq's `allow` tries plain first: closest here is `prefer`.
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }
}

/// PEM texts given in code, beside the connection string's files.
#[derive(Clone, Default)]
pub(crate) struct TlsPem {
    pub(crate) root: Option<Vec<u8>>,
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Where and how to connect: the parsed config and the TLS connector.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) config: Config,
    pub(crate) tls: MakeRustlsConnect,
    /// The `search_path` each connection sets, if any.
    pub(crate) schema: Option<String>,
}

/// The keys tokio-postgres reads itself.
const CLIENT_KEYS: [&str; 18] = [
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

fn invalid(reason: impl Into<String>) -> PostgresJournalError {
    PostgresJournalError::InvalidConfig { reason: reason.into() }
}

/// Parses `url` and makes its TLS connector.
pub(crate) fn target(url: &str, pem: &TlsPem, schema: Option<String>) -> Result<Target, PostgresJournalError> {
    let url_form = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (base, pairs) = if url_form { split_url(url)? } else { (String::new(), split_key_values(url)?) };
    let mut mode = TlsMode::Prefer;
    let mut root_file = None;
    let mut cert_file = None;
    let mut key_file = None;
    let mut passfile = None;
    let mut kept = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "sslmode" => {
                mode = TlsMode::parse(&value).ok_or_else(|| {
                    invalid("sslmode is none of disable, allow, prefer, require, verify-ca, verify-full")
                })?;
            }
            "sslrootcert" => root_file = Some(PathBuf::from(value)),
            "sslcert" => cert_file = Some(PathBuf::from(value)),
            "sslkey" => key_file = Some(PathBuf::from(value)),
            "passfile" => passfile = Some(PathBuf::from(value)),
            known if CLIENT_KEYS.contains(&known) => kept.push((key, value)),
            // Not named: it may be a piece of a password after a stray quote.
            _ => return Err(invalid("the connection string has an unknown key (not shown)")),
        }
    }
    let rebuilt = if url_form {
        let query: Vec<String> = kept.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
        if query.is_empty() { base } else { format!("{base}?{}", query.join("&")) }
    } else {
        let pairs: Vec<String> = kept.iter().map(|(k, v)| format!("{k}='{}'", quote(v))).collect();
        pairs.join(" ")
    };
    // The rebuilt string is well formed: what is left to refuse is a value
    // (a port that is no number, …), and tokio-postgres names its key only.
    let mut config: Config = rebuilt.parse().map_err(|e: tokio_postgres::Error| {
        invalid(match std::error::Error::source(&e) {
            Some(source) => format!("{source}"),
            None => "the connection string is invalid".into(),
        })
    })?;
    config.ssl_mode(match mode {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
    });
    if config.get_password().is_none() {
        if let Some(password) = password_from_environment(&config, passfile) {
            config.password(password);
        }
    }
    let client = match (cert_file, key_file, &pem.client) {
        (_, _, Some((cert, key))) => Some(client_identity(cert, key)?),
        (Some(cert), Some(key), None) => {
            let cert = read_file("sslcert", &cert)?;
            Some(client_identity(&cert, &read_file("sslkey", &key)?)?)
        }
        (None, None, None) => None,
        _ => return Err(invalid("sslcert and sslkey go together")),
    };
    let root = match (&pem.root, root_file) {
        (Some(pem), _) => Some(pem.clone()),
        (None, Some(file)) => Some(read_file("sslrootcert", &file)?),
        (None, None) => None,
    };
    let tls = connector(mode, root.as_deref(), client)?;
    Ok(Target { config, tls, schema })
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, PostgresJournalError> {
    std::fs::read(path).map_err(|e| invalid(format!("cannot read the {key} file {}: {e}", path.display())))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_identity(cert: &[u8], key: &[u8]) -> Result<Identity, PostgresJournalError> {
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid("the client certificate is not PEM"))?;
    // The key's text is never shown.
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| invalid("the client key is not a PEM private key"))?;
    Ok((certs, key))
}

fn connector(
    mode: TlsMode,
    root: Option<&[u8]>,
    client: Option<Identity>,
) -> Result<MakeRustlsConnect, PostgresJournalError> {
    // rustls 0.23.48 deprecates the ring provider for its lack of
    // post-quantum key exchange; aws-lc-rs has it but needs cmake and a
    // long C build. Classical key exchange (X25519, P-256) is what
    // Postgres servers negotiate today.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match root {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|_| invalid("the root certificate is not PEM"))?;
                roots.add(cert).map_err(|e| invalid(format!("the root certificate is refused: {e}")))?;
            }
            if roots.is_empty() {
                return Err(invalid("the root certificate file holds no certificate"));
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (TlsMode::VerifyFull, Some(roots)) => webpki(roots, &provider)?,
        (TlsMode::VerifyCa | TlsMode::Require | TlsMode::Prefer, Some(roots)) => {
            Arc::new(ChainOnly(webpki(roots, &provider)?))
        }
        (TlsMode::VerifyCa | TlsMode::VerifyFull, None) => {
            return Err(invalid(
                "sslmode verify-ca and verify-full need a root certificate (sslrootcert, or \
                 PostgresOptions::root_certificate_pem)",
            ));
        }
        (TlsMode::Disable | TlsMode::Require | TlsMode::Prefer, _) => Arc::new(Unverified(provider.clone())),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| invalid(format!("the client certificate or key is refused: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn webpki(
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, PostgresJournalError> {
    WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| invalid(format!("the root certificate is refused: {e}")))
}

/// `verify-ca` (and `require` with a root certificate): the chain is
/// checked, the host name is not. webpki checks the chain first, so a
/// name error means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: encrypted, the
/// certificate not checked (libpq's semantics), the handshake's signatures
/// still are.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Splits a `postgres://` URL into the part before `?` and its decoded
/// query pairs.
fn split_url(url: &str) -> Result<(String, Vec<(String, String)>), PostgresJournalError> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), Vec::new())) };
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) =
            pair.split_once('=').ok_or_else(|| invalid("a parameter of the URL has no \"=\" (not shown)"))?;
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| invalid("a parameter of the URL is not valid percent-encoded UTF-8"))
        };
        pairs.push((decode(key)?, decode(value)?));
    }
    Ok((base.to_owned(), pairs))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = std::str::from_utf8(bytes.get(at + 1..at + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A value inside single quotes, as libpq reads it.
fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

/// libpq's `key=value` form: values bare or in single quotes, a backslash
/// escaping the next character.
fn split_key_values(s: &str) -> Result<Vec<(String, String)>, PostgresJournalError> {
    let mut chars = s.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|&c| c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid("the connection string has a word without \"=\" (not shown)"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(invalid("the connection string has an unterminated quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// The password libpq would use when the string has none: `PGPASSWORD`,
/// else the first matching line of the password file (`passfile`,
/// `PGPASSFILE`, or `~/.pgpass`), which on Unix is ignored if others may
/// read it (as libpq does).
fn password_from_environment(config: &Config, passfile: Option<PathBuf>) -> Option<String> {
    if let Some(password) = std::env::var_os("PGPASSWORD") {
        return password.into_string().ok();
    }
    let file = passfile
        .or_else(|| std::env::var_os("PGPASSFILE").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pgpass")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(&file).ok()?.permissions().mode() & 0o077 != 0 {
            return None;
        }
    }
    let text = std::fs::read_to_string(&file).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = config.get_user().unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(user);
    password_file_lookup(&text, [&host, &port, dbname, user])
}

/// The password of the first `host:port:dbname:user:password` line that
/// matches (`*` matches anything; `\` escapes `:` and `\`).
pub(crate) fn password_file_lookup(text: &str, wanted: [&str; 4]) -> Option<String> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let mut fields = Vec::with_capacity(5);
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        let [host, port, dbname, user, password] = <[String; 5]>::try_from(fields).ok()?;
        let matches = [host, port, dbname, user].iter().zip(wanted).all(|(have, want)| have == "*" || have == want);
        matches.then_some(password)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_read_as_libpq_reads_them() {
        // `'it'` ends at the second quote, then `'s'` is a stray word:
        // refused, without the text.
        let error = split_key_values(r"host=/tmp  password = 'it''s' user=u").unwrap_err();
        assert!(!error.to_string().contains("'s'"), "{error}");
        let pairs = split_key_values(r"host=/tmp  password = 'it\'s a secret' user=a\ b").unwrap();
        assert_eq!(
            pairs,
            [
                ("host".into(), "/tmp".into()),
                ("password".into(), "it's a secret".into()),
                ("user".into(), "a b".into())
            ]
        );
    }

    #[test]
    fn a_stray_word_after_a_password_is_not_shown() {
        let pem = TlsPem::default();
        for url in [
            "host=/tmp password=abc xyzzy user=u",
            "host=/tmp password=abc xyzzy=1",
            "postgres://u@h/db?password=abc&xyzzy",
        ] {
            let error = target(url, &pem, None).err().expect("refused");
            assert!(!format!("{error} {error:?}").contains("xyzzy"), "{error}");
        }
    }

    #[test]
    fn password_file_lines_match_with_wildcards_and_escapes() {
        let file = "# comment\nother:5432:*:*:no\nlocalhost:*:app:bob:pa\\:ss\\\\word\n*:*:*:*:fallback\n";
        assert_eq!(password_file_lookup(file, ["localhost", "5432", "app", "bob"]).as_deref(), Some("pa:ss\\word"));
        assert_eq!(password_file_lookup(file, ["db", "5433", "x", "y"]).as_deref(), Some("fallback"));
        assert_eq!(password_file_lookup("h:1:d:u\n", ["h", "1", "d", "u"]), None);
    }
}
