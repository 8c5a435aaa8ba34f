//! Helpers shared by the integration tests of the `quiver` crate.

use aws_sdk_s3vectors::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3vectors::Client;

/// The official AWS Rust SDK client for a Quiver endpoint (`http://host:port`), in us-east-1.
pub fn sdk_client(endpoint: &str, access_key_id: &str, secret: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_s3vectors::Config::builder()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key_id, secret, None, None, "test"))
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .build();
    Client::from_conf(config)
}
