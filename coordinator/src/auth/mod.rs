//! Authentication (SigV4) and authorization (identity + bucket policies).
//!
//! Every API request is authenticated by [`Authenticator::authenticate`] before it is parsed;
//! every operation then calls [`Authenticator::authorize`] with its action(s) and resource ARN
//! before any side effect.

pub mod policy;
pub mod sigv4;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method, Uri};
use serde::Deserialize;

use crate::error::ApiError;
use policy::{combine, Caller, Decision, Policy};
use sigv4::{AuthError, SigningKeys, Verifier};

/// One user from the auth config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// IAM identity policy document (JSON text).
    pub policy: String,
}

/// The `--auth-config` TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted difference between a request's X-Amz-Date and the server clock.
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

fn default_skew() -> u64 {
    sigv4::DEFAULT_CLOCK_SKEW.as_secs()
}

/// The documented dev credentials of `quiver dev` and local test clusters (full access).
pub const DEV_ACCESS_KEY_ID: &str = "quiverdev";
pub const DEV_SECRET_ACCESS_KEY: &str = "quiverdevsecret";

/// Full access to everything: the identity policy of the dev user.
pub const ALLOW_ALL: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3vectors:*","Resource":"*"}]}"#;

/// A users file or user entry that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("reading auth config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing auth config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("user {user:?}: {message}")]
    User { user: String, message: String },
    #[error("access key id {0:?} is configured twice")]
    DuplicateKey(String),
}

impl AuthConfig {
    pub fn load(path: &Path) -> Result<AuthConfig, AuthConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| AuthConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// The documented dev credentials ([`DEV_ACCESS_KEY_ID`]) with full access.
    pub fn documented_dev() -> AuthConfig {
        AuthConfig::dev(DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY)
    }

    /// One user with full access.
    pub fn dev(access_key_id: &str, secret: &str) -> AuthConfig {
        AuthConfig {
            clock_skew_seconds: default_skew(),
            users: vec![UserConfig {
                name: "dev".into(),
                access_key_id: access_key_id.into(),
                secret_access_key: secret.into(),
                policy: ALLOW_ALL.into(),
            }],
        }
    }
}

struct User {
    secret: String,
    caller: Caller,
    policy: Policy,
}

pub struct Authenticator {
    region: String,
    clock_skew: Duration,
    users: HashMap<String, User>,
    signing_keys: SigningKeys,
}

/// An authenticated request: who made it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub access_key_id: String,
    pub caller: Caller,
}

impl Authenticator {
    /// Validates the config (unique keys, parseable policies) and builds the authenticator.
    pub fn new(
        config: &AuthConfig,
        region: &str,
        account_id: &str,
    ) -> Result<Self, AuthConfigError> {
        let mut users = HashMap::new();
        for user in &config.users {
            let invalid = |message: String| AuthConfigError::User {
                user: user.name.clone(),
                message,
            };
            if user.access_key_id.len() < 3 || user.secret_access_key.len() < 8 {
                return Err(invalid(
                    "access_key_id needs ≥ 3 characters and secret_access_key ≥ 8".into(),
                ));
            }
            let policy = Policy::parse(&user.policy, false)
                .map_err(|e| invalid(format!("invalid policy: {e}")))?;
            let entry = User {
                secret: user.secret_access_key.clone(),
                caller: Caller {
                    arn: format!("arn:aws:iam::{account_id}:user/{}", user.name),
                    account_id: account_id.to_owned(),
                },
                policy,
            };
            if users.insert(user.access_key_id.clone(), entry).is_some() {
                return Err(AuthConfigError::DuplicateKey(user.access_key_id.clone()));
            }
        }
        Ok(Authenticator {
            region: region.to_owned(),
            clock_skew: Duration::from_secs(config.clock_skew_seconds),
            users,
            signing_keys: SigningKeys::default(),
        })
    }

    pub fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Principal, ApiError> {
        let verifier = Verifier {
            region: &self.region,
            clock_skew: self.clock_skew,
            keys: &self.signing_keys,
        };
        let verified = verifier
            .verify(method, uri, headers, body, SystemTime::now(), |key| {
                self.users.get(key).map(|u| u.secret.clone())
            })
            .map_err(|e| {
                tracing::info!(error = %e, "request failed authentication");
                auth_error(e)
            })?;
        let user = self
            .users
            .get(&verified.access_key_id)
            .ok_or_else(|| auth_error(AuthError::UnknownAccessKey))?;
        Ok(Principal {
            access_key_id: verified.access_key_id,
            caller: user.caller.clone(),
        })
    }

    /// Checks every action in `actions` on `resource` against the caller's identity policy and
    /// the bucket policy (if the resource's bucket has one).
    pub fn authorize(
        &self,
        principal: &Principal,
        actions: &[&str],
        resource: &str,
        bucket_policy: Option<&str>,
    ) -> Result<(), ApiError> {
        let user = self
            .users
            .get(&principal.access_key_id)
            .ok_or_else(|| auth_error(AuthError::UnknownAccessKey))?;
        // A stored bucket policy was validated when it was put; an unparseable one grants nothing.
        let bucket_policy = bucket_policy.and_then(|text| Policy::parse(text, true).ok());
        for action in actions {
            let decision = combine(
                std::iter::once(user.policy.evaluate(&principal.caller, action, resource)).chain(
                    bucket_policy
                        .iter()
                        .map(|p| p.evaluate(&principal.caller, action, resource)),
                ),
            );
            if decision != Decision::Allow {
                let reason = if decision == Decision::ExplicitDeny {
                    "with an explicit deny"
                } else {
                    "because no policy allows it"
                };
                return Err(ApiError::AccessDenied(format!(
                    "User: {} is not authorized to perform: {action} on resource: {resource} {reason}",
                    principal.caller.arn
                )));
            }
        }
        Ok(())
    }
}

fn auth_error(e: AuthError) -> ApiError {
    let error_type = match e {
        AuthError::Missing => "MissingAuthenticationTokenException",
        AuthError::UnknownAccessKey => "UnrecognizedClientException",
        AuthError::Malformed(_) => "IncompleteSignatureException",
        AuthError::Expired { .. }
        | AuthError::NotYetValid { .. }
        | AuthError::WrongRegion(_)
        | AuthError::WrongService
        | AuthError::SignatureMismatch => "InvalidSignatureException",
    };
    ApiError::Unauthenticated {
        error_type,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented template in deploy/ is what users copy: it must stay valid.
    #[test]
    fn the_example_config_parses_and_validates() {
        let text = include_str!("../../../deploy/auth.example.toml");
        let config: AuthConfig = toml::from_str(text).expect("template parses");
        assert_eq!(config.users.len(), 3);
        assert_eq!(config.clock_skew_seconds, 900);
        let auth = Authenticator::new(&config, "us-east-1", "123456789012").expect("valid");
        let principal = Principal {
            access_key_id: "AKIAQUIVERINGEST001".into(),
            caller: Caller {
                arn: "arn:aws:iam::123456789012:user/ingest".into(),
                account_id: "123456789012".into(),
            },
        };
        let index = "arn:aws:s3vectors:us-east-1:123456789012:bucket/media/index/movies";
        assert!(auth
            .authorize(&principal, &["s3vectors:PutVectors"], index, None)
            .is_ok());
        assert!(auth
            .authorize(&principal, &["s3vectors:DeleteVectors"], index, None)
            .is_err());
        assert!(auth
            .authorize(&principal, &["s3vectors:QueryVectors"], index, None)
            .is_err());
    }

    #[test]
    fn rejects_unknown_fields_and_duplicate_keys() {
        assert!(toml::from_str::<AuthConfig>("bogus = 1").is_err());
        let config = AuthConfig {
            clock_skew_seconds: 900,
            users: vec![
                UserConfig {
                    name: "a".into(),
                    access_key_id: "KEY1".into(),
                    secret_access_key: "secret-1234".into(),
                    policy: ALLOW_ALL.into(),
                },
                UserConfig {
                    name: "b".into(),
                    access_key_id: "KEY1".into(),
                    secret_access_key: "secret-5678".into(),
                    policy: ALLOW_ALL.into(),
                },
            ],
        };
        assert!(Authenticator::new(&config, "us-east-1", "123456789012").is_err());
    }
}
