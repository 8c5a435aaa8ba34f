//! The S3 Vectors operations, parsed from the HTTP request before anything else happens.
//!
//! Everything the server needs to know about an operation besides its handler hangs off
//! [`Operation`]: its name (also the metrics label), its HTTP route, the IAM actions it
//! authorizes, how it reads the catalog and whether it may be re-run after a read barrier. Every
//! property is an exhaustive `match`, so a new variant does not compile until each is decided.

use axum::http::Method;

/// One operation of the S3 Vectors API (the 22 of the botocore model `s3vectors` 2025-07-15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    CreateVectorBucket,
    GetVectorBucket,
    ListVectorBuckets,
    DeleteVectorBucket,
    PutVectorBucketPolicy,
    GetVectorBucketPolicy,
    DeleteVectorBucketPolicy,
    PutVectorBucketDefaultIndexMode,
    CreateIndex,
    GetIndex,
    ListIndexes,
    DeleteIndex,
    UpdateIndexMode,
    UpdateMetadataConfiguration,
    PutVectors,
    GetVectors,
    ListVectors,
    DeleteVectors,
    QueryVectors,
    TagResource,
    UntagResource,
    ListTagsForResource,
}

/// How an operation reads the catalog, which decides its read barrier (see `api::run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// Reads only the catalog itself: linearizable, the barrier comes first. Cheap and rare
    /// next to data calls.
    ControlRead,
    /// Reads vectors from the shards; the catalog is read locally (addresses, shard map).
    DataRead,
    /// Changes the catalog or the vectors.
    Write,
}

/// The `{resourceArn}` label of the tag routes: one non-empty path segment (the ARN is
/// percent-encoded, so its slashes arrive as `%2F`).
const ARN_LABEL: &str = "{resourceArn}";

impl Operation {
    /// Every operation, in the order of the enum.
    pub const ALL: [Operation; 22] = [
        Operation::CreateVectorBucket,
        Operation::GetVectorBucket,
        Operation::ListVectorBuckets,
        Operation::DeleteVectorBucket,
        Operation::PutVectorBucketPolicy,
        Operation::GetVectorBucketPolicy,
        Operation::DeleteVectorBucketPolicy,
        Operation::PutVectorBucketDefaultIndexMode,
        Operation::CreateIndex,
        Operation::GetIndex,
        Operation::ListIndexes,
        Operation::DeleteIndex,
        Operation::UpdateIndexMode,
        Operation::UpdateMetadataConfiguration,
        Operation::PutVectors,
        Operation::GetVectors,
        Operation::ListVectors,
        Operation::DeleteVectors,
        Operation::QueryVectors,
        Operation::TagResource,
        Operation::UntagResource,
        Operation::ListTagsForResource,
    ];

    /// The operation a request calls, from its method and (still percent-encoded) path; `None`
    /// for anything that is not an S3 Vectors route.
    pub fn from_request(method: &Method, path: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|operation| {
            let (route_method, route) = operation.http_route();
            route_method == *method && route_matches(route, path)
        })
    }

    /// The operation name of the model; also the `operation` label of the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateVectorBucket => "CreateVectorBucket",
            Operation::GetVectorBucket => "GetVectorBucket",
            Operation::ListVectorBuckets => "ListVectorBuckets",
            Operation::DeleteVectorBucket => "DeleteVectorBucket",
            Operation::PutVectorBucketPolicy => "PutVectorBucketPolicy",
            Operation::GetVectorBucketPolicy => "GetVectorBucketPolicy",
            Operation::DeleteVectorBucketPolicy => "DeleteVectorBucketPolicy",
            Operation::PutVectorBucketDefaultIndexMode => "PutVectorBucketDefaultIndexMode",
            Operation::CreateIndex => "CreateIndex",
            Operation::GetIndex => "GetIndex",
            Operation::ListIndexes => "ListIndexes",
            Operation::DeleteIndex => "DeleteIndex",
            Operation::UpdateIndexMode => "UpdateIndexMode",
            Operation::UpdateMetadataConfiguration => "UpdateMetadataConfiguration",
            Operation::PutVectors => "PutVectors",
            Operation::GetVectors => "GetVectors",
            Operation::ListVectors => "ListVectors",
            Operation::DeleteVectors => "DeleteVectors",
            Operation::QueryVectors => "QueryVectors",
            Operation::TagResource => "TagResource",
            Operation::UntagResource => "UntagResource",
            Operation::ListTagsForResource => "ListTagsForResource",
        }
    }

    /// The HTTP binding of the model (restJson1): method and request URI.
    pub fn http_route(self) -> (Method, &'static str) {
        match self {
            Operation::CreateVectorBucket => (Method::POST, "/CreateVectorBucket"),
            Operation::GetVectorBucket => (Method::POST, "/GetVectorBucket"),
            Operation::ListVectorBuckets => (Method::POST, "/ListVectorBuckets"),
            Operation::DeleteVectorBucket => (Method::POST, "/DeleteVectorBucket"),
            Operation::PutVectorBucketPolicy => (Method::POST, "/PutVectorBucketPolicy"),
            Operation::GetVectorBucketPolicy => (Method::POST, "/GetVectorBucketPolicy"),
            Operation::DeleteVectorBucketPolicy => (Method::POST, "/DeleteVectorBucketPolicy"),
            Operation::PutVectorBucketDefaultIndexMode => {
                (Method::POST, "/PutVectorBucketDefaultIndexMode")
            }
            Operation::CreateIndex => (Method::POST, "/CreateIndex"),
            Operation::GetIndex => (Method::POST, "/GetIndex"),
            Operation::ListIndexes => (Method::POST, "/ListIndexes"),
            Operation::DeleteIndex => (Method::POST, "/DeleteIndex"),
            Operation::UpdateIndexMode => (Method::POST, "/UpdateIndexMode"),
            Operation::UpdateMetadataConfiguration => {
                (Method::POST, "/UpdateMetadataConfiguration")
            }
            Operation::PutVectors => (Method::POST, "/PutVectors"),
            Operation::GetVectors => (Method::POST, "/GetVectors"),
            Operation::ListVectors => (Method::POST, "/ListVectors"),
            Operation::DeleteVectors => (Method::POST, "/DeleteVectors"),
            Operation::QueryVectors => (Method::POST, "/QueryVectors"),
            Operation::TagResource => (Method::POST, "/tags/{resourceArn}"),
            Operation::UntagResource => (Method::DELETE, "/tags/{resourceArn}"),
            Operation::ListTagsForResource => (Method::GET, "/tags/{resourceArn}"),
        }
    }

    /// The IAM action that authorizes the operation.
    pub fn iam_action(self) -> &'static str {
        match self {
            Operation::CreateVectorBucket => "s3vectors:CreateVectorBucket",
            Operation::GetVectorBucket => "s3vectors:GetVectorBucket",
            Operation::ListVectorBuckets => "s3vectors:ListVectorBuckets",
            Operation::DeleteVectorBucket => "s3vectors:DeleteVectorBucket",
            Operation::PutVectorBucketPolicy => "s3vectors:PutVectorBucketPolicy",
            Operation::GetVectorBucketPolicy => "s3vectors:GetVectorBucketPolicy",
            Operation::DeleteVectorBucketPolicy => "s3vectors:DeleteVectorBucketPolicy",
            Operation::PutVectorBucketDefaultIndexMode => {
                "s3vectors:PutVectorBucketDefaultIndexMode"
            }
            Operation::CreateIndex => "s3vectors:CreateIndex",
            Operation::GetIndex => "s3vectors:GetIndex",
            Operation::ListIndexes => "s3vectors:ListIndexes",
            Operation::DeleteIndex => "s3vectors:DeleteIndex",
            Operation::UpdateIndexMode => "s3vectors:UpdateIndexMode",
            Operation::UpdateMetadataConfiguration => "s3vectors:UpdateMetadataConfiguration",
            Operation::PutVectors => "s3vectors:PutVectors",
            Operation::GetVectors => "s3vectors:GetVectors",
            Operation::ListVectors => "s3vectors:ListVectors",
            Operation::DeleteVectors => "s3vectors:DeleteVectors",
            Operation::QueryVectors => "s3vectors:QueryVectors",
            Operation::TagResource => "s3vectors:TagResource",
            Operation::UntagResource => "s3vectors:UntagResource",
            Operation::ListTagsForResource => "s3vectors:ListTagsForResource",
        }
    }

    /// The operation whose action a request also needs when it asks for more than the
    /// operation itself: creating a resource with tags also tags it; listing or querying
    /// vectors with their data, metadata or a metadata filter also reads them (GetVectors).
    pub fn implied(self) -> Option<Operation> {
        match self {
            Operation::CreateVectorBucket | Operation::CreateIndex => Some(Operation::TagResource),
            Operation::ListVectors | Operation::QueryVectors => Some(Operation::GetVectors),
            Operation::GetVectorBucket
            | Operation::ListVectorBuckets
            | Operation::DeleteVectorBucket
            | Operation::PutVectorBucketPolicy
            | Operation::GetVectorBucketPolicy
            | Operation::DeleteVectorBucketPolicy
            | Operation::PutVectorBucketDefaultIndexMode
            | Operation::GetIndex
            | Operation::ListIndexes
            | Operation::DeleteIndex
            | Operation::UpdateIndexMode
            | Operation::UpdateMetadataConfiguration
            | Operation::PutVectors
            | Operation::GetVectors
            | Operation::DeleteVectors
            | Operation::TagResource
            | Operation::UntagResource
            | Operation::ListTagsForResource => None,
        }
    }

    /// The IAM actions a request authorizes: the operation's own, plus the [`implied`]
    /// operation's when `with_implied` (the request asks for what that operation covers).
    ///
    /// [`implied`]: Operation::implied
    pub fn iam_actions(self, with_implied: bool) -> Vec<&'static str> {
        let implied = self.implied().filter(|_| with_implied);
        std::iter::once(self)
            .chain(implied)
            .map(Operation::iam_action)
            .collect()
    }

    pub fn read_kind(self) -> ReadKind {
        match self {
            Operation::GetVectorBucket
            | Operation::ListVectorBuckets
            | Operation::GetVectorBucketPolicy
            | Operation::GetIndex
            | Operation::ListIndexes
            | Operation::ListTagsForResource => ReadKind::ControlRead,
            Operation::GetVectors | Operation::ListVectors | Operation::QueryVectors => {
                ReadKind::DataRead
            }
            Operation::CreateVectorBucket
            | Operation::DeleteVectorBucket
            | Operation::PutVectorBucketPolicy
            | Operation::DeleteVectorBucketPolicy
            | Operation::PutVectorBucketDefaultIndexMode
            | Operation::CreateIndex
            | Operation::DeleteIndex
            | Operation::UpdateIndexMode
            | Operation::UpdateMetadataConfiguration
            | Operation::PutVectors
            | Operation::DeleteVectors
            | Operation::TagResource
            | Operation::UntagResource => ReadKind::Write,
        }
    }

    /// Whether a NotFound answer from this coordinator's local catalog is checked once more
    /// after a read barrier (the resource may have been created through another coordinator
    /// that this one has not caught up with yet), by running the whole operation again.
    ///
    /// That is safe only if a NotFound answer changed nothing. It holds for each operation
    /// below because every handler answers NotFound only (a) from `resolve_bucket` /
    /// `resolve_index` or a catalog lookup, before any catalog command, data-plane call or
    /// throttle charge, or (b) from a catalog command that found nothing to change and so
    /// applied nothing. The data plane never answers NotFound (a missing shard is a 503).
    /// Control reads pass the barrier before they run, so their NotFound is already final.
    pub fn retries_on_not_found(self) -> bool {
        match self {
            Operation::CreateVectorBucket
            | Operation::DeleteVectorBucket
            | Operation::PutVectorBucketPolicy
            | Operation::DeleteVectorBucketPolicy
            | Operation::PutVectorBucketDefaultIndexMode
            | Operation::CreateIndex
            | Operation::DeleteIndex
            | Operation::UpdateIndexMode
            | Operation::UpdateMetadataConfiguration
            | Operation::PutVectors
            | Operation::GetVectors
            | Operation::ListVectors
            | Operation::DeleteVectors
            | Operation::QueryVectors
            | Operation::TagResource
            | Operation::UntagResource => true,
            Operation::GetVectorBucket
            | Operation::ListVectorBuckets
            | Operation::GetVectorBucketPolicy
            | Operation::GetIndex
            | Operation::ListIndexes
            | Operation::ListTagsForResource => false,
        }
    }
}

/// Whether `path` matches the model's request URI `route` (literal, or with `{resourceArn}`).
fn route_matches(route: &str, path: &str) -> bool {
    match route.strip_suffix(ARN_LABEL) {
        None => route == path,
        Some(prefix) => path
            .strip_prefix(prefix)
            .is_some_and(|label| !label.is_empty() && !label.contains('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `coordinator/tests/fixtures/s3vectors-operations.txt`: the operations of the botocore
    /// model (name, method, request URI), one a line.
    const MODEL_OPERATIONS: &str = include_str!("../../tests/fixtures/s3vectors-operations.txt");

    fn model_operations() -> Vec<(&'static str, Method, &'static str)> {
        MODEL_OPERATIONS
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [name, method, uri] = fields.as_slice() else {
                    panic!("fixture line {line:?} is not `name method uri`");
                };
                let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
                (*name, method, *uri)
            })
            .collect()
    }

    /// A request path for a model URI (a sample ARN for the label, encoded as clients do).
    fn sample_path(uri: &str) -> String {
        uri.replace(
            ARN_LABEL,
            "arn%3Aaws%3As3vectors%3Aus-east-1%3A123456789012%3Abucket%2Fb-1",
        )
    }

    #[test]
    fn every_model_operation_has_a_variant_with_its_route() {
        let model = model_operations();
        assert_eq!(model.len(), 22, "the fixture lists 22 operations");
        for (name, method, uri) in model {
            let operation = Operation::from_request(&method, &sample_path(uri))
                .unwrap_or_else(|| panic!("no Operation for {name} ({method} {uri})"));
            assert_eq!(operation.name(), name);
            assert_eq!(operation.http_route(), (method, uri), "{name}");
        }
    }

    #[test]
    fn every_variant_is_in_the_model() {
        let model = model_operations();
        for operation in Operation::ALL {
            assert!(
                model.iter().any(|(name, _, _)| *name == operation.name()),
                "{operation:?} is not an operation of the botocore model"
            );
        }
        let mut names: Vec<_> = Operation::ALL.iter().map(|op| op.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Operation::ALL.len(), "names are unique");
    }

    #[test]
    fn named_operations_are_post_only() {
        assert_eq!(
            Operation::from_request(&Method::POST, "/QueryVectors"),
            Some(Operation::QueryVectors)
        );
        for (method, path) in [
            (Method::GET, "/QueryVectors"),
            (Method::DELETE, "/CreateVectorBucket"),
            (Method::POST, "/NoSuchOperation"),
            (Method::POST, "/"),
            (Method::POST, ""),
            (Method::POST, "/queryvectors"),
            (Method::POST, "/QueryVectors/extra"),
            (Method::POST, "/Create%49ndex"),
            // Tag operations have their own route only.
            (Method::POST, "/TagResource"),
            (Method::POST, "/ListTagsForResource"),
            (Method::POST, "/health"),
        ] {
            assert_eq!(
                Operation::from_request(&method, path),
                None,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn the_tags_route_is_chosen_by_method() {
        let path = sample_path("/tags/{resourceArn}");
        assert_eq!(
            Operation::from_request(&Method::GET, &path),
            Some(Operation::ListTagsForResource)
        );
        assert_eq!(
            Operation::from_request(&Method::POST, &path),
            Some(Operation::TagResource)
        );
        assert_eq!(
            Operation::from_request(&Method::DELETE, &path),
            Some(Operation::UntagResource)
        );
        for (method, path) in [
            (Method::PUT, path.as_str()),
            (Method::PATCH, path.as_str()),
            (Method::GET, "/tags/"),
            (Method::GET, "/tags"),
            // An ARN whose slashes are not encoded is more than one segment.
            (
                Method::GET,
                "/tags/arn:aws:s3vectors:us-east-1:123456789012:bucket/x/index/y",
            ),
        ] {
            assert_eq!(
                Operation::from_request(&method, path),
                None,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn iam_actions_are_the_operation_names() {
        for operation in Operation::ALL {
            assert_eq!(
                operation.iam_action(),
                format!("s3vectors:{}", operation.name())
            );
            assert_eq!(operation.iam_actions(false), [operation.iam_action()]);
        }
    }

    #[test]
    fn implied_actions() {
        use Operation as O;
        let with_implied = |op: Operation| op.iam_actions(true);
        assert_eq!(
            with_implied(O::CreateVectorBucket),
            ["s3vectors:CreateVectorBucket", "s3vectors:TagResource"]
        );
        assert_eq!(
            with_implied(O::CreateIndex),
            ["s3vectors:CreateIndex", "s3vectors:TagResource"]
        );
        assert_eq!(
            with_implied(O::ListVectors),
            ["s3vectors:ListVectors", "s3vectors:GetVectors"]
        );
        assert_eq!(
            with_implied(O::QueryVectors),
            ["s3vectors:QueryVectors", "s3vectors:GetVectors"]
        );
        let implying = [
            O::CreateVectorBucket,
            O::CreateIndex,
            O::ListVectors,
            O::QueryVectors,
        ];
        for operation in Operation::ALL {
            if !implying.contains(&operation) {
                assert_eq!(operation.implied(), None, "{operation:?}");
                assert_eq!(with_implied(operation), [operation.iam_action()]);
            }
        }
    }

    #[test]
    fn control_reads_are_the_catalog_reads() {
        use Operation as O;
        let control_reads: Vec<_> = Operation::ALL
            .into_iter()
            .filter(|op| op.read_kind() == ReadKind::ControlRead)
            .collect();
        assert_eq!(
            control_reads,
            [
                O::GetVectorBucket,
                O::ListVectorBuckets,
                O::GetVectorBucketPolicy,
                O::GetIndex,
                O::ListIndexes,
                O::ListTagsForResource,
            ]
        );
        let data_reads: Vec<_> = Operation::ALL
            .into_iter()
            .filter(|op| op.read_kind() == ReadKind::DataRead)
            .collect();
        assert_eq!(data_reads, [O::GetVectors, O::ListVectors, O::QueryVectors]);
    }

    #[test]
    fn every_operation_that_reads_local_state_retries_a_not_found() {
        for operation in Operation::ALL {
            let barrier_first = operation.read_kind() == ReadKind::ControlRead;
            assert_eq!(
                operation.retries_on_not_found(),
                !barrier_first,
                "{operation:?}"
            );
        }
    }
}
