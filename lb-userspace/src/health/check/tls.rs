//! TLS client settings of SSL_GET. Like keepalived, the checker does not verify the real's
//! certificate (reals typically carry the service's public name, or a self-signed one); it still
//! verifies the handshake signatures, so the TLS exchange itself is sound.

use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

/// Accepts any certificate chain, but checks the handshake signatures with the provider.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The shared client configuration, built once (it holds session caches worth sharing).
pub(crate) fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, rustls::Error>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// The name to send as SNI: `sni` when it is a DNS name (the config sets it from `virtualhost`
/// for `enable_sni`), else none, as keepalived sends none by default (an IP address as server
/// name makes rustls send no SNI). The Host header still carries `virtualhost`.
pub(crate) fn server_name(
    sni: Option<&str>,
    _virtualhost: Option<&str>,
    target: IpAddr,
) -> ServerName<'static> {
    let dns_name = |name: &str| match ServerName::try_from(name.to_owned()) {
        Ok(name @ ServerName::DnsName(_)) => Some(name),
        _ => None,
    };
    sni.and_then(dns_name).unwrap_or_else(|| ServerName::IpAddress(target.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_choice() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let name = |s: &str| ServerName::try_from(s.to_owned()).unwrap();
        let table = [
            (Some("sni.example"), Some("vh.example"), name("sni.example")),
            (None, Some("vh.example"), ServerName::IpAddress(ip.into())),
            (None, Some("198.51.100.7"), ServerName::IpAddress(ip.into())),
            (None, None, ServerName::IpAddress(ip.into())),
            (Some("bad name!"), Some("vh.example"), ServerName::IpAddress(ip.into())),
        ];
        for (sni, vhost, want) in table {
            assert_eq!(server_name(sni, vhost, ip), want, "sni={sni:?} vhost={vhost:?}");
        }
    }

    #[test]
    fn config_builds() {
        assert!(client_config().is_ok());
    }
}
