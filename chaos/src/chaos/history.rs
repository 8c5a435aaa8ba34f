//! The history of a chaos run: every operation the clients invoked and what they were told, the
//! faults the nemesis injected, and the final reads after healing. Written as JSON lines (one
//! `invoke` line when an operation starts, one `ok` / `fail` / `info` line when it ends, one line
//! per fault start and end) and read back into [`History`] for the checker.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};

/// What the client was told.
///
/// `Fail` means the operation certainly did not take effect (the server refused it before doing
/// anything: a 4xx answer, throttling included). `Info` means the client cannot know: a 5xx, a
/// timeout, a reset connection. The checker lets an `Info` write take effect or not, but never a
/// `Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

impl Outcome {
    /// Classifies an HTTP answer (`None`: no answer at all).
    pub fn from_status(status: Option<u16>) -> Outcome {
        match status {
            Some(s) if (200..300).contains(&s) => Outcome::Ok,
            Some(s) if (400..500).contains(&s) => Outcome::Fail,
            _ => Outcome::Info,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// PutVectors of new keys, each with a value never written before.
    Put,
    /// DeleteVectors of keys whose put was acknowledged.
    Delete,
    /// GetVectors of keys, with their metadata (the value).
    Get,
    /// QueryVectors with a written key's own vector: the key must be among the answers.
    Probe,
}

/// When an operation ran: during the workload, or in the final reads after every fault healed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Workload,
    Final,
}

/// One operation, invocation and completion together. Times are milliseconds since the run
/// started, on one monotonic clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub id: u64,
    pub client: u32,
    /// Index of the coordinator endpoint the request went to.
    pub coordinator: usize,
    pub kind: OpKind,
    #[serde(default)]
    pub phase: Phase,
    /// Put: `(key, value)` written. Delete / Get: the keys, with an empty value. Probe: the key
    /// whose vector is the query.
    pub keys: Vec<(String, String)>,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Outcome,
    /// Get: the `(key, value)` pairs returned. Probe: the keys returned, empty values.
    #[serde(default)]
    pub found: Vec<(String, String)>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A fault the nemesis injected, from injection to the moment it was healed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: String,
    pub target: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// What the final read found for a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "value")]
pub enum FinalState {
    Present(String),
    Absent,
    /// Every read of it failed until the deadline.
    Unreadable,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
    pub faults: Vec<Fault>,
    /// Every key the workload tried to write, and every key a final listing returned.
    pub final_state: BTreeMap<String, FinalState>,
}

/// One line of the JSONL history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Invoke {
        id: u64,
        client: u32,
        coordinator: usize,
        kind: OpKind,
        #[serde(default)]
        phase: Phase,
        keys: Vec<(String, String)>,
        at_ms: u64,
    },
    Complete {
        id: u64,
        outcome: Outcome,
        at_ms: u64,
        #[serde(default)]
        found: Vec<(String, String)>,
        #[serde(default)]
        error: Option<String>,
    },
    Fault(Fault),
    Final {
        key: String,
        #[serde(flatten)]
        state: FinalState,
    },
}

impl Op {
    /// The line written when the operation starts.
    pub fn invoke_line(&self) -> Line {
        Line::Invoke {
            id: self.id,
            client: self.client,
            coordinator: self.coordinator,
            kind: self.kind,
            phase: self.phase,
            keys: self.keys.clone(),
            at_ms: self.invoke_ms,
        }
    }

    /// The line written when it ends.
    pub fn complete_line(&self) -> Line {
        Line::Complete {
            id: self.id,
            outcome: self.outcome,
            at_ms: self.complete_ms,
            found: self.found.clone(),
            error: self.error.clone(),
        }
    }
}

impl History {
    /// Reads a JSONL history. An invocation without a completion (the tool died first) becomes
    /// an `Info` operation that may have completed at any time after it was invoked.
    pub fn read(reader: impl BufRead) -> anyhow::Result<History> {
        let mut history = History::default();
        let mut open: BTreeMap<u64, Op> = BTreeMap::new();
        let lines: Vec<String> = reader.lines().collect::<Result<_, _>>()?;
        let last = lines.len().saturating_sub(1);
        for (n, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line = match serde_json::from_str(line) {
                Ok(parsed) => parsed,
                // The tool was killed while writing its last line.
                Err(_) if n == last => break,
                Err(e) => anyhow::bail!("history line {}: {e}", n + 1),
            };
            match parsed {
                Line::Invoke {
                    id,
                    client,
                    coordinator,
                    kind,
                    phase,
                    keys,
                    at_ms,
                } => {
                    open.insert(
                        id,
                        Op {
                            id,
                            client,
                            coordinator,
                            kind,
                            phase,
                            keys,
                            invoke_ms: at_ms,
                            complete_ms: u64::MAX,
                            outcome: Outcome::Info,
                            found: Vec::new(),
                            error: None,
                        },
                    );
                }
                Line::Complete {
                    id,
                    outcome,
                    at_ms,
                    found,
                    error,
                } => {
                    let Some(mut op) = open.remove(&id) else {
                        anyhow::bail!("history line {}: completion of unknown op {id}", n + 1);
                    };
                    op.outcome = outcome;
                    op.complete_ms = at_ms;
                    op.found = found;
                    op.error = error;
                    history.ops.push(op);
                }
                Line::Fault(fault) => history.faults.push(fault),
                Line::Final { key, state } => {
                    history.final_state.insert(key, state);
                }
            }
        }
        history.ops.extend(open.into_values());
        history.ops.sort_by_key(|op| (op.invoke_ms, op.id));
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of a history, operations in invocation order.
    fn lines(history: &History) -> Vec<Line> {
        let mut lines: Vec<Line> = history
            .ops
            .iter()
            .flat_map(|op| [op.invoke_line(), op.complete_line()])
            .collect();
        lines.extend(history.faults.iter().cloned().map(Line::Fault));
        lines.extend(history.final_state.iter().map(|(key, state)| Line::Final {
            key: key.clone(),
            state: state.clone(),
        }));
        lines
    }

    #[test]
    fn a_history_survives_its_jsonl_form() {
        let history = History {
            ops: vec![Op {
                id: 7,
                client: 1,
                coordinator: 2,
                kind: OpKind::Get,
                phase: Phase::Workload,
                keys: vec![("k1".into(), String::new())],
                invoke_ms: 10,
                complete_ms: 25,
                outcome: Outcome::Ok,
                found: vec![("k1".into(), "v1".into())],
                error: None,
            }],
            faults: vec![Fault {
                kind: "kill".into(),
                target: "node-1".into(),
                start_ms: 5,
                end_ms: 50,
            }],
            final_state: [
                ("k1".to_owned(), FinalState::Present("v1".into())),
                ("k2".to_owned(), FinalState::Absent),
            ]
            .into(),
        };
        let text: String = lines(&history)
            .iter()
            .map(|l| serde_json::to_string(l).unwrap() + "\n")
            .collect();
        assert!(text.starts_with(r#"{"type":"invoke","id":7,"#), "{text}");
        assert!(text.contains(r#""type":"final","key":"k2","state":"absent""#));
        assert_eq!(History::read(text.as_bytes()).unwrap(), history);
    }

    #[test]
    fn an_operation_that_never_completed_is_indeterminate() {
        let text = r#"{"type":"invoke","id":1,"client":0,"coordinator":0,"kind":"put","keys":[["k","v"]],"at_ms":3}"#;
        let history = History::read(text.as_bytes()).unwrap();
        assert_eq!(history.ops[0].outcome, Outcome::Info);
        assert_eq!(history.ops[0].complete_ms, u64::MAX);
        assert!(
            History::read(r#"{"type":"complete","id":9,"outcome":"ok","at_ms":1}"#.as_bytes())
                .is_err()
        );
        // A last line cut short (the tool was killed) is ignored; one in the middle is an error.
        let cut = format!("{text}\n{{\"type\":\"inv");
        assert_eq!(History::read(cut.as_bytes()).unwrap(), history);
        let middle = format!("{{\"type\":\"inv\n{text}");
        assert!(History::read(middle.as_bytes()).is_err());
    }

    #[test]
    fn only_a_refusal_is_a_definite_failure() {
        assert_eq!(Outcome::from_status(Some(200)), Outcome::Ok);
        assert_eq!(Outcome::from_status(Some(400)), Outcome::Fail);
        assert_eq!(Outcome::from_status(Some(429)), Outcome::Fail);
        assert_eq!(Outcome::from_status(Some(503)), Outcome::Info);
        assert_eq!(Outcome::from_status(Some(500)), Outcome::Info);
        assert_eq!(Outcome::from_status(None), Outcome::Info);
    }
}
