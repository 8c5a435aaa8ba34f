//! A minimal S3 Vectors client: `POST /<Operation>` with a JSON body, SigV4-signed (service
//! `s3vectors`) with `aws-sigv4`, over a pooled `reqwest` client. Only loopback endpoints.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde::{Deserialize, Serialize};

use crate::report::Failure;

pub const SERVICE: &str = "s3vectors";
pub const DEV_ACCESS_KEY_ID: &str = "quiverdev";
pub const DEV_SECRET_ACCESS_KEY: &str = "quiverdevsecret";
pub const DEV_REGION: &str = "us-east-1";
/// Deadline of one request, connect included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct S3VectorsClient {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    identity: Identity,
    region: String,
}

/// Checks that `endpoint` is `http://127.0.0.1:<port>` (or `localhost`): the tools only ever
/// talk to this machine. Returns the `host:port` part.
pub fn loopback_host(endpoint: &str) -> anyhow::Result<String> {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        bail!("endpoint must start with http://, got {endpoint:?}");
    };
    let host = rest.trim_end_matches('/');
    let Some((name, port)) = host.rsplit_once(':') else {
        bail!("endpoint must name a port, got {endpoint:?}");
    };
    if !matches!(name, "127.0.0.1" | "localhost") || port.parse::<u16>().is_err() {
        bail!("only http://127.0.0.1:<port> endpoints are allowed, got {endpoint:?}");
    }
    Ok(host.to_owned())
}

impl S3VectorsClient {
    pub fn new(
        endpoint: &str,
        access_key_id: &str,
        secret: &str,
        region: &str,
        max_connections: usize,
    ) -> anyhow::Result<Self> {
        let host = loopback_host(endpoint)?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(max_connections)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .context("building the http client")?;
        let identity = Credentials::new(access_key_id, secret, None, None, "quiver-chaos").into();
        Ok(S3VectorsClient {
            http,
            endpoint: format!("http://{host}"),
            host,
            identity,
            region: region.to_owned(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Signs and sends one operation; returns the response body of a 2xx answer.
    pub async fn call(&self, operation: &str, body: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let url = format!("{}/{operation}", self.endpoint);
        let signed = self.sign(&url, &body).map_err(|e| Failure {
            error_type: "ChaosSigningError".into(),
            status: None,
            message: format!("{e:#}"),
        })?;
        let mut request = self
            .http
            .post(&url)
            .header("host", &self.host)
            .header("content-type", "application/json");
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(transport_failure)?;
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-ErrorType")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_owned());
        let bytes = response.bytes().await.map_err(transport_failure)?;
        if (200..300).contains(&status) {
            return Ok(bytes.to_vec());
        }
        Err(Failure {
            error_type: error_type.unwrap_or_else(|| format!("Http{status}")),
            status: Some(status),
            message: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned(),
        })
    }

    fn sign(&self, url: &str, body: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .context("signing parameters")?
            .into();
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", "application/json"),
        ];
        let signable =
            SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body))
                .context("signable request")?;
        let (instructions, _signature) = sign(signable, &params).context("signing")?.into_parts();
        Ok(instructions
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect())
    }

    pub async fn call_json<T: Serialize, R: for<'de> Deserialize<'de>>(
        &self,
        operation: &str,
        request: &T,
    ) -> Result<R, Failure> {
        let body =
            serde_json::to_vec(request).map_err(|e| client_failure("ChaosEncodeError", e))?;
        let bytes = self.call(operation, body).await?;
        // Operations without output answer 200 with an empty body.
        let bytes = if bytes.is_empty() {
            b"null".to_vec()
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| client_failure("ChaosDecodeError", e))
    }

    /// `GET /health` (unauthenticated), true on 200.
    pub async fn healthy(&self) -> bool {
        match self
            .http
            .get(format!("{}/health", self.endpoint))
            .send()
            .await
        {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }
}

fn transport_failure(e: reqwest::Error) -> Failure {
    let error_type = if e.is_timeout() {
        "ChaosTimeout"
    } else if e.is_connect() {
        "ChaosConnectError"
    } else {
        "ChaosTransportError"
    };
    Failure {
        error_type: error_type.into(),
        status: None,
        message: format!("{e}"),
    }
}

pub fn client_failure(error_type: &str, e: impl std::fmt::Display) -> Failure {
    Failure {
        error_type: error_type.into(),
        status: None,
        message: e.to_string(),
    }
}

// -- request and response shapes ----------------------------------------------------------------

#[derive(Serialize)]
pub struct Float32Data<'a> {
    pub float32: &'a [f32],
}

#[derive(Serialize)]
pub struct PutVector<'a> {
    pub key: String,
    pub data: Float32Data<'a>,
    pub metadata: serde_json::Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PutVectorsRequest<'a> {
    pub vector_bucket_name: &'a str,
    pub index_name: &'a str,
    pub vectors: Vec<PutVector<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryVectorsRequest<'a> {
    pub vector_bucket_name: &'a str,
    pub index_name: &'a str,
    pub top_k: usize,
    pub query_vector: Float32Data<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<serde_json::Value>,
    pub return_distance: bool,
}

#[derive(Deserialize)]
pub struct QueryVectorsResponse {
    pub vectors: Vec<KeyOnly>,
}

#[derive(Deserialize)]
pub struct KeyOnly {
    pub key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeysRequest<'a> {
    pub vector_bucket_name: &'a str,
    pub index_name: &'a str,
    pub keys: Vec<String>,
}

#[derive(Deserialize)]
pub struct GetVectorsResponse {
    pub vectors: Vec<KeyOnly>,
}

#[derive(Deserialize)]
pub struct Empty {}

impl S3VectorsClient {
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), Failure> {
        let body = serde_json::json!({ "vectorBucketName": bucket });
        self.call_json::<_, serde_json::Value>("CreateVectorBucket", &body)
            .await
            .map(drop)
    }

    pub async fn create_index(
        &self,
        bucket: &str,
        index: &str,
        dimension: usize,
        metric: &str,
    ) -> Result<(), Failure> {
        let body = serde_json::json!({
            "vectorBucketName": bucket,
            "indexName": index,
            "dataType": "float32",
            "dimension": dimension,
            "distanceMetric": metric,
        });
        self.call_json::<_, serde_json::Value>("CreateIndex", &body)
            .await
            .map(drop)
    }

    pub async fn put_vectors(&self, request: &PutVectorsRequest<'_>) -> Result<(), Failure> {
        self.call_json::<_, serde_json::Value>("PutVectors", request)
            .await
            .map(drop)
    }

    pub async fn query_keys(
        &self,
        request: &QueryVectorsRequest<'_>,
    ) -> Result<Vec<String>, Failure> {
        let response: QueryVectorsResponse = self.call_json("QueryVectors", request).await?;
        let keys: Vec<String> = response.vectors.into_iter().map(|v| v.key).collect();
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        if keys.len() > request.top_k || distinct.len() != keys.len() {
            return Err(Failure {
                error_type: "ChaosBadAnswer".into(),
                status: Some(200),
                message: format!(
                    "{} keys ({} distinct) for topK {}",
                    keys.len(),
                    distinct.len(),
                    request.top_k
                ),
            });
        }
        Ok(keys)
    }

    /// Returns the keys found.
    pub async fn get_keys(&self, request: &KeysRequest<'_>) -> Result<Vec<String>, Failure> {
        let response: GetVectorsResponse = self.call_json("GetVectors", request).await?;
        Ok(response.vectors.into_iter().map(|v| v.key).collect())
    }

    pub async fn delete_keys(&self, request: &KeysRequest<'_>) -> Result<(), Failure> {
        self.call_json::<_, serde_json::Value>("DeleteVectors", request)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_endpoints_are_accepted() {
        assert_eq!(
            loopback_host("http://127.0.0.1:8277").unwrap(),
            "127.0.0.1:8277"
        );
        assert_eq!(loopback_host("http://localhost:9/").unwrap(), "localhost:9");
        assert!(loopback_host("http://10.0.0.1:8277").is_err());
        assert!(loopback_host("https://127.0.0.1:8277").is_err());
        assert!(loopback_host("http://127.0.0.1").is_err());
        assert!(loopback_host("http://127.0.0.1.evil.com:80").is_err());
    }

    #[test]
    fn signing_adds_authorization_for_s3vectors() {
        let client = S3VectorsClient::new(
            "http://127.0.0.1:8277",
            DEV_ACCESS_KEY_ID,
            DEV_SECRET_ACCESS_KEY,
            DEV_REGION,
            4,
        )
        .unwrap();
        let headers = client
            .sign("http://127.0.0.1:8277/QueryVectors", b"{}")
            .unwrap();
        let auth = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.clone())
            .expect("authorization header");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=quiverdev/"),
            "{auth}"
        );
        assert!(auth.contains("/us-east-1/s3vectors/aws4_request"), "{auth}");
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date"),
            "{auth}"
        );
        assert!(headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("x-amz-date")));
    }

    #[test]
    fn requests_use_the_s3_vectors_json_names() {
        let v = [1.0f32, 2.0];
        let q = QueryVectorsRequest {
            vector_bucket_name: "b",
            index_name: "i",
            top_k: 10,
            query_vector: Float32Data { float32: &v },
            filter: Some(serde_json::json!({"group": "g1"})),
            return_distance: true,
        };
        let json = serde_json::to_value(&q).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"vectorBucketName": "b", "indexName": "i", "topK": 10,
                "queryVector": {"float32": [1.0, 2.0]}, "filter": {"group": "g1"},
                "returnDistance": true})
        );
    }
}
