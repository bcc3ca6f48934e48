//! A failed TLS handshake in an operator's words.
//!
//! Owns: the hint added to rustls's own text for the failures a deployment meets (a client
//! too old, nothing in common, a client that does not trust the certificate). rustls names
//! them by its enum variants (`peer is incompatible: SignatureAlgorithmsExtensionRequired`,
//! `received fatal alert: UnknownCA`), which say what happened but not what to do.
//!
//! Must never: hide rustls's text (it is what a bug report needs), or guess beyond what the
//! error says.

use rustls::{AlertDescription, Error, PeerIncompatible};

/// rustls's text for `e`, with a hint in words where one helps.
pub fn described(e: &Error) -> String {
    match hint(e) {
        Some(h) => format!("{e} ({h})"),
        None => e.to_string(),
    }
}

fn hint(e: &Error) -> Option<&'static str> {
    Some(match e {
        Error::PeerIncompatible(p) => match p {
            PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::SupportedVersionsExtensionRequired => {
                "the client offers no TLS version this listener speaks: TLS 1.2 and 1.3, or 1.3 only \
                 with tls_server_version 13"
            }
            PeerIncompatible::SignatureAlgorithmsExtensionRequired => {
                "the client's hello lists no signature algorithms: a TLS 1.0 or 1.1 client, which \
                 this server does not speak"
            }
            PeerIncompatible::NoCipherSuitesInCommon => {
                "no cipher suite in common: the server offers AES-GCM and ChaCha20-Poly1305 only"
            }
            PeerIncompatible::NoKxGroupsInCommon => {
                "no key exchange group in common: the server offers X25519, P-256 and P-384"
            }
            PeerIncompatible::NoSignatureSchemesInCommon => {
                "the client accepts no signature this certificate's key can make"
            }
            _ => return None,
        },
        Error::AlertReceived(a) => match a {
            AlertDescription::UnknownCA => {
                "the client does not trust the certificate: is its chain complete, \
                 intermediates included, and signed by a CA the client knows?"
            }
            AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate => {
                "the client refused the certificate: does it name the host the client asked \
                 for, and is it valid now?"
            }
            AlertDescription::CertificateExpired => {
                "the client says the certificate expired (or is not valid yet by its clock)"
            }
            AlertDescription::ProtocolVersion => "the client speaks no TLS version the server does",
            _ => return None,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failures_of_a_deployment_get_words_and_keep_rustls_text() {
        let old_client =
            Error::PeerIncompatible(PeerIncompatible::SignatureAlgorithmsExtensionRequired);
        assert_eq!(
            described(&old_client),
            "peer is incompatible: SignatureAlgorithmsExtensionRequired (the client's hello \
             lists no signature algorithms: a TLS 1.0 or 1.1 client, which this server does \
             not speak)"
        );
        let untrusted = Error::AlertReceived(AlertDescription::UnknownCA);
        let said = described(&untrusted);
        assert!(
            said.starts_with("received fatal alert: UnknownCA (the client does not trust"),
            "{said}"
        );
        assert!(said.contains("intermediates included"), "{said}");
        // Nothing to add: rustls's text alone.
        let other = Error::AlertReceived(AlertDescription::UserCanceled);
        assert_eq!(described(&other), other.to_string());
    }
}
