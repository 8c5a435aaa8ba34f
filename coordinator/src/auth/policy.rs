//! IAM-style policy documents: parsing, validation, and evaluation with the AWS rule that an
//! explicit Deny anywhere wins, and otherwise an Allow in the identity policy or in the bucket
//! policy (for a matching principal) grants access.

use serde_json::Value;

/// Largest policy document accepted (IAM's limit for resource policies is 20 KB).
pub const MAX_POLICY_BYTES: usize = 20 * 1024;
pub const MAX_STATEMENTS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// A list of patterns, or "everything except" them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Any(Vec<String>),
    Not(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The statement has no Principal (identity policies).
    None,
    /// `"*"` or `{"AWS": "*"}`.
    Everyone,
    /// `{"AWS": [arns or account ids]}`.
    Aws(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub effect: Effect,
    pub principal: Principal,
    pub action: Match,
    pub resource: Match,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

fn err(message: impl Into<String>) -> PolicyError {
    PolicyError(message.into())
}

fn strings(value: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err(format!("{what} must be a string or a list of strings")))
            })
            .collect(),
        _ => Err(err(format!(
            "{what} must be a string or a non-empty list of strings"
        ))),
    }
}

fn either(
    statement: &serde_json::Map<String, Value>,
    positive: &str,
    negative: &str,
) -> Result<Match, PolicyError> {
    match (statement.get(positive), statement.get(negative)) {
        (Some(v), None) => Ok(Match::Any(strings(v, positive)?)),
        (None, Some(v)) => Ok(Match::Not(strings(v, negative)?)),
        _ => Err(err(format!(
            "Each statement must have exactly one of {positive} or {negative}"
        ))),
    }
}

impl Policy {
    /// Parses a policy. `resource_policy` statements must name a Principal; identity policy
    /// statements must not.
    pub fn parse(text: &str, resource_policy: bool) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(err(format!(
                "Policy document exceeds {MAX_POLICY_BYTES} bytes"
            )));
        }
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| err(format!("Policy is not valid JSON: {e}")))?;
        let Value::Object(doc) = doc else {
            return Err(err("Policy must be a JSON object"));
        };
        for key in doc.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(err(format!("Unsupported policy element: {key}")));
            }
        }
        if let Some(version) = doc.get("Version") {
            if !matches!(version.as_str(), Some("2012-10-17") | Some("2008-10-17")) {
                return Err(err("Version must be 2012-10-17 or 2008-10-17"));
            }
        }
        let statements = match doc.get("Statement") {
            Some(Value::Array(items)) => items.clone(),
            Some(obj @ Value::Object(_)) => vec![obj.clone()],
            _ => return Err(err("Policy must contain a Statement")),
        };
        if statements.is_empty() || statements.len() > MAX_STATEMENTS {
            return Err(err(format!(
                "Policy must have 1 to {MAX_STATEMENTS} statements"
            )));
        }
        let statements = statements
            .iter()
            .map(|s| Self::statement(s, resource_policy))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { statements })
    }

    fn statement(value: &Value, resource_policy: bool) -> Result<Statement, PolicyError> {
        let Value::Object(s) = value else {
            return Err(err("Each statement must be a JSON object"));
        };
        for key in s.keys() {
            match key.as_str() {
                "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource"
                | "Principal" => {}
                "Condition" => return Err(err("Condition elements are not supported")),
                "NotPrincipal" => return Err(err("NotPrincipal is not supported")),
                other => return Err(err(format!("Unsupported statement element: {other}"))),
            }
        }
        let effect = match s.get("Effect").and_then(Value::as_str) {
            Some("Allow") => Effect::Allow,
            Some("Deny") => Effect::Deny,
            _ => return Err(err("Effect must be \"Allow\" or \"Deny\"")),
        };
        let principal = match s.get("Principal") {
            None if resource_policy => {
                return Err(err("Statements of a bucket policy must have a Principal"))
            }
            None => Principal::None,
            Some(_) if !resource_policy => {
                return Err(err("Identity policies must not have a Principal"))
            }
            Some(Value::String(star)) if star == "*" => Principal::Everyone,
            Some(Value::Object(p)) => match p.get("AWS") {
                Some(v) => {
                    let arns = strings(v, "Principal.AWS")?;
                    if arns.iter().any(|a| a == "*") {
                        Principal::Everyone
                    } else {
                        Principal::Aws(arns)
                    }
                }
                None => return Err(err("Only AWS principals are supported")),
            },
            Some(_) => return Err(err("Principal must be \"*\" or {\"AWS\": ...}")),
        };
        let action = either(s, "Action", "NotAction")?;
        for pattern in match &action {
            Match::Any(p) | Match::Not(p) => p,
        } {
            if pattern != "*" && !pattern.to_ascii_lowercase().starts_with("s3vectors:") {
                return Err(err(format!(
                    "Action '{pattern}' is not an s3vectors action"
                )));
            }
        }
        let resource = either(s, "Resource", "NotResource")?;
        Ok(Statement {
            effect,
            principal,
            action,
            resource,
        })
    }
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    let fold = |c: char| {
        if case_insensitive {
            c.to_ascii_lowercase()
        } else {
            c
        }
    };
    let p: Vec<char> = pattern.chars().map(fold).collect();
    let t: Vec<char> = text.chars().map(fold).collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn matches(m: &Match, text: &str, case_insensitive: bool) -> bool {
    match m {
        Match::Any(patterns) => patterns.iter().any(|p| glob(p, text, case_insensitive)),
        Match::Not(patterns) => !patterns.iter().any(|p| glob(p, text, case_insensitive)),
    }
}

/// The outcome of evaluating one or more policies for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    ExplicitDeny,
    Allow,
    ImplicitDeny,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// e.g. `arn:aws:iam::123456789012:user/alice`
    pub arn: String,
    pub account_id: String,
}

impl Policy {
    /// Evaluates this policy alone for (caller, action, resource).
    pub fn evaluate(&self, caller: &Caller, action: &str, resource: &str) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            // Naming the account (or its root) delegates to the account's identity policies: it
            // matches every caller of the account for a Deny, but grants nothing by itself.
            let principal_ok = match &s.principal {
                Principal::None | Principal::Everyone => true,
                Principal::Aws(ids) => ids.iter().any(|id| {
                    id == &caller.arn
                        || (s.effect == Effect::Deny
                            && (id == &caller.account_id
                                || *id == format!("arn:aws:iam::{}:root", caller.account_id)))
                }),
            };
            if !principal_ok
                || !matches(&s.action, action, true)
                || !matches(&s.resource, resource, false)
            {
                continue;
            }
            match s.effect {
                Effect::Deny => return Decision::ExplicitDeny,
                Effect::Allow => allowed = true,
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}

/// Combines identity and resource policies: an explicit Deny in either wins; else an Allow in
/// either grants.
pub fn combine(decisions: impl IntoIterator<Item = Decision>) -> Decision {
    let mut result = Decision::ImplicitDeny;
    for d in decisions {
        match d {
            Decision::ExplicitDeny => return Decision::ExplicitDeny,
            Decision::Allow => result = Decision::Allow,
            Decision::ImplicitDeny => {}
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Caller {
        Caller {
            arn: "arn:aws:iam::123456789012:user/alice".into(),
            account_id: "123456789012".into(),
        }
    }

    #[test]
    fn globbing() {
        assert!(glob("s3vectors:Get*", "s3vectors:GetVectors", true));
        assert!(glob("S3Vectors:get*", "s3vectors:GetVectors", true));
        assert!(!glob("s3vectors:Get*", "s3vectors:PutVectors", true));
        assert!(glob(
            "arn:aws:s3vectors:*:*:bucket/b1/*",
            "arn:aws:s3vectors:us-east-1:1:bucket/b1/index/i",
            false
        ));
        assert!(!glob(
            "arn:aws:s3vectors:*:*:bucket/b1/*",
            "arn:aws:s3vectors:us-east-1:1:bucket/b1",
            false
        ));
        assert!(glob("a?c", "abc", false));
        assert!(glob("*", "", false));
    }

    #[test]
    fn deny_wins_and_not_action_works() {
        let identity = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"s3vectors:*","Resource":"*"},
                {"Effect":"Deny","NotAction":["s3vectors:Get*","s3vectors:List*","s3vectors:QueryVectors"],"Resource":"arn:aws:s3vectors:*:*:bucket/ro/*"}]}"#,
            false,
        )
        .expect("valid");
        let ro = "arn:aws:s3vectors:us-east-1:123456789012:bucket/ro/index/i";
        assert_eq!(
            identity.evaluate(&alice(), "s3vectors:GetVectors", ro),
            Decision::Allow
        );
        assert_eq!(
            identity.evaluate(&alice(), "s3vectors:PutVectors", ro),
            Decision::ExplicitDeny
        );
        let bucket = Policy::parse(
            r#"{"Statement":{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::123456789012:user/alice"},"Action":"s3vectors:QueryVectors","Resource":"*"}}"#,
            true,
        )
        .expect("valid");
        assert_eq!(
            combine([
                identity.evaluate(&alice(), "s3vectors:QueryVectors", ro),
                bucket.evaluate(&alice(), "s3vectors:QueryVectors", ro)
            ]),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn rejects_bad_documents() {
        for bad in [
            "nope",
            "[]",
            r#"{"Statement":[]}"#,
            r#"{"Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{}}]}"#,
        ] {
            assert!(Policy::parse(bad, false).is_err(), "{bad}");
        }
        assert!(Policy::parse(
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
            true
        )
        .is_err());
    }
}
