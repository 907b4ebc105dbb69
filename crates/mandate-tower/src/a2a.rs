//! A2A operations, recognised from JSON-RPC method names (v1.0 and v0.3) and
//! from the HTTP+JSON binding's paths (v1.0 and v0.3 `/v1/...`). Policy is
//! written in v1.0 names; v0.3 callers are held to the same rules.

use serde::Deserialize;

/// An A2A operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum A2aOperation {
    /// Send a message.
    SendMessage,
    /// Send a message and stream the answer.
    SendStreamingMessage,
    /// Read a task.
    GetTask,
    /// List tasks.
    ListTasks,
    /// Cancel a task.
    CancelTask,
    /// Stream a task's updates.
    SubscribeToTask,
    /// Create a push notification config.
    CreateTaskPushNotificationConfig,
    /// Read a push notification config.
    GetTaskPushNotificationConfig,
    /// List push notification configs.
    ListTaskPushNotificationConfigs,
    /// Delete a push notification config.
    DeleteTaskPushNotificationConfig,
    /// Read the extended (authenticated) Agent Card.
    GetExtendedAgentCard,
}

use A2aOperation as Op;

const ALL: [Op; 11] = [
    Op::SendMessage,
    Op::SendStreamingMessage,
    Op::GetTask,
    Op::ListTasks,
    Op::CancelTask,
    Op::SubscribeToTask,
    Op::CreateTaskPushNotificationConfig,
    Op::GetTaskPushNotificationConfig,
    Op::ListTaskPushNotificationConfigs,
    Op::DeleteTaskPushNotificationConfig,
    Op::GetExtendedAgentCard,
];

impl A2aOperation {
    /// The v1.0 name, used in configuration and the audit trail.
    pub const fn name(self) -> &'static str {
        match self {
            Op::SendMessage => "SendMessage",
            Op::SendStreamingMessage => "SendStreamingMessage",
            Op::GetTask => "GetTask",
            Op::ListTasks => "ListTasks",
            Op::CancelTask => "CancelTask",
            Op::SubscribeToTask => "SubscribeToTask",
            Op::CreateTaskPushNotificationConfig => "CreateTaskPushNotificationConfig",
            Op::GetTaskPushNotificationConfig => "GetTaskPushNotificationConfig",
            Op::ListTaskPushNotificationConfigs => "ListTaskPushNotificationConfigs",
            Op::DeleteTaskPushNotificationConfig => "DeleteTaskPushNotificationConfig",
            Op::GetExtendedAgentCard => "GetExtendedAgentCard",
        }
    }

    /// Parses a v1.0 name (configuration keys).
    pub fn from_name(name: &str) -> Option<Self> {
        ALL.into_iter().find(|o| o.name() == name)
    }

    /// The operation a JSON-RPC method names, in either version.
    pub fn from_jsonrpc(method: &str) -> Option<Self> {
        let legacy = match method {
            "message/send" => Some(Op::SendMessage),
            "message/stream" => Some(Op::SendStreamingMessage),
            "tasks/get" => Some(Op::GetTask),
            "tasks/list" => Some(Op::ListTasks),
            "tasks/cancel" => Some(Op::CancelTask),
            "tasks/resubscribe" => Some(Op::SubscribeToTask),
            "tasks/pushNotificationConfig/set" => Some(Op::CreateTaskPushNotificationConfig),
            "tasks/pushNotificationConfig/get" => Some(Op::GetTaskPushNotificationConfig),
            "tasks/pushNotificationConfig/list" => Some(Op::ListTaskPushNotificationConfigs),
            "tasks/pushNotificationConfig/delete" => Some(Op::DeleteTaskPushNotificationConfig),
            "agent/getAuthenticatedExtendedCard" => Some(Op::GetExtendedAgentCard),
            _ => None,
        };
        legacy.or_else(|| Self::from_name(method))
    }

    /// The operation an HTTP+JSON request names; `path` is relative to the
    /// agent's base URL. v0.3 paths carry a `/v1` prefix; a tenant prefix is
    /// tolerated by matching on the path's tail.
    pub fn from_rest(method: &http::Method, path: &str) -> Option<Self> {
        let path = path.split('?').next().unwrap_or(path);
        let path = path.strip_prefix("/v1").unwrap_or(path);
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let m = method.as_str();
        match (m, segments.as_slice()) {
            ("POST", [.., "message:send"]) => Some(Op::SendMessage),
            ("POST", [.., "message:stream"]) => Some(Op::SendStreamingMessage),
            ("GET", [.., "extendedAgentCard"]) | ("GET", ["card"]) => {
                Some(Op::GetExtendedAgentCard)
            }
            ("GET", [.., "tasks"]) => Some(Op::ListTasks),
            ("POST" | "GET", [.., "tasks", last]) if last.ends_with(":subscribe") => {
                Some(Op::SubscribeToTask)
            }
            ("POST", [.., "tasks", last]) if last.ends_with(":cancel") => Some(Op::CancelTask),
            ("GET", [.., "tasks", _]) => Some(Op::GetTask),
            ("POST", [.., "tasks", _, "pushNotificationConfigs"]) => {
                Some(Op::CreateTaskPushNotificationConfig)
            }
            ("GET", [.., "tasks", _, "pushNotificationConfigs"]) => {
                Some(Op::ListTaskPushNotificationConfigs)
            }
            ("GET", [.., "tasks", _, "pushNotificationConfigs", _]) => {
                Some(Op::GetTaskPushNotificationConfig)
            }
            ("DELETE", [.., "tasks", _, "pushNotificationConfigs", _]) => {
                Some(Op::DeleteTaskPushNotificationConfig)
            }
            _ => None,
        }
    }
}

/// Why a JSON-RPC body was refused; each is a JSON-RPC error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonRpcError {
    /// -32700: not JSON.
    Parse,
    /// -32600: JSON but not a JSON-RPC 2.0 request object.
    InvalidRequest,
}

impl JsonRpcError {
    /// The JSON-RPC error code.
    pub const fn code(self) -> i64 {
        match self {
            Self::Parse => -32700,
            Self::InvalidRequest => -32600,
        }
    }

    /// The JSON-RPC error message.
    pub const fn message(self) -> &'static str {
        match self {
            Self::Parse => "Parse error",
            Self::InvalidRequest => "Invalid Request",
        }
    }
}

/// The parts of a JSON-RPC request the guard needs.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonRpcCall {
    /// The method.
    pub method: String,
    /// The id, echoed in errors.
    pub id: serde_json::Value,
}

/// Reads a JSON-RPC 2.0 request envelope. Batches are refused: A2A does not use them.
///
/// Only the envelope is decoded: `params` and other members are skipped
/// without being built, and a member given twice is refused, so the gateway
/// and the upstream cannot read different methods from one body.
pub fn parse_jsonrpc(body: &[u8]) -> Result<JsonRpcCall, JsonRpcError> {
    #[derive(Deserialize)]
    struct Envelope {
        jsonrpc: Option<String>,
        method: Option<serde_json::Value>,
        #[serde(default)]
        id: serde_json::Value,
    }
    // A derived struct would also read an array positionally.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => JsonRpcError::InvalidRequest,
                Err(_) => JsonRpcError::Parse,
            },
        );
    }
    let env: Envelope = serde_json::from_slice(body).map_err(|e| match e.classify() {
        // Well-formed JSON of the wrong shape (not an object, a member of
        // the wrong type, a duplicate member).
        serde_json::error::Category::Data => JsonRpcError::InvalidRequest,
        _ => JsonRpcError::Parse,
    })?;
    match (env.jsonrpc.as_deref(), env.method) {
        (Some("2.0"), Some(serde_json::Value::String(method))) if !method.is_empty() => {
            Ok(JsonRpcCall { method, id: env.id })
        }
        _ => Err(JsonRpcError::InvalidRequest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn jsonrpc_names_of_both_versions() {
        assert_eq!(
            A2aOperation::from_jsonrpc("SendMessage"),
            Some(Op::SendMessage)
        );
        assert_eq!(
            A2aOperation::from_jsonrpc("message/send"),
            Some(Op::SendMessage)
        );
        assert_eq!(
            A2aOperation::from_jsonrpc("message/stream"),
            Some(Op::SendStreamingMessage)
        );
        assert_eq!(
            A2aOperation::from_jsonrpc("tasks/resubscribe"),
            Some(Op::SubscribeToTask)
        );
        assert_eq!(
            A2aOperation::from_jsonrpc("agent/getAuthenticatedExtendedCard"),
            Some(Op::GetExtendedAgentCard)
        );
        assert_eq!(A2aOperation::from_jsonrpc("DoSomethingElse"), None);
        for op in ALL {
            assert_eq!(A2aOperation::from_name(op.name()), Some(op));
        }
    }

    #[test]
    fn rest_paths_of_both_versions() {
        let cases = [
            (Method::POST, "/message:send", Some(Op::SendMessage)),
            (Method::POST, "/v1/message:send", Some(Op::SendMessage)),
            (
                Method::POST,
                "/message:stream",
                Some(Op::SendStreamingMessage),
            ),
            (Method::GET, "/tasks/abc", Some(Op::GetTask)),
            (Method::GET, "/v1/tasks/abc", Some(Op::GetTask)),
            (Method::GET, "/tasks", Some(Op::ListTasks)),
            (Method::POST, "/tasks/abc:cancel", Some(Op::CancelTask)),
            (
                Method::GET,
                "/tasks/abc:subscribe",
                Some(Op::SubscribeToTask),
            ),
            (
                Method::POST,
                "/v1/tasks/abc:subscribe",
                Some(Op::SubscribeToTask),
            ),
            (
                Method::POST,
                "/tasks/abc/pushNotificationConfigs",
                Some(Op::CreateTaskPushNotificationConfig),
            ),
            (
                Method::GET,
                "/tasks/abc/pushNotificationConfigs/c1",
                Some(Op::GetTaskPushNotificationConfig),
            ),
            (
                Method::DELETE,
                "/tasks/abc/pushNotificationConfigs/c1",
                Some(Op::DeleteTaskPushNotificationConfig),
            ),
            (
                Method::GET,
                "/extendedAgentCard",
                Some(Op::GetExtendedAgentCard),
            ),
            (Method::GET, "/v1/card", Some(Op::GetExtendedAgentCard)),
            (Method::GET, "/tenant-a/tasks/abc", Some(Op::GetTask)),
            (Method::GET, "/", None),
            (Method::PUT, "/tasks/abc", None),
        ];
        for (m, p, want) in cases {
            assert_eq!(A2aOperation::from_rest(&m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn jsonrpc_envelopes() {
        let ok = parse_jsonrpc(br#"{"jsonrpc":"2.0","id":7,"method":"message/send","params":{}}"#)
            .unwrap();
        assert_eq!(ok.method, "message/send");
        assert_eq!(ok.id, serde_json::json!(7));
        assert_eq!(parse_jsonrpc(b"{not json"), Err(JsonRpcError::Parse));
        assert_eq!(parse_jsonrpc(b"[]"), Err(JsonRpcError::InvalidRequest));
        assert_eq!(parse_jsonrpc(b" 5 x"), Err(JsonRpcError::Parse));
        // Not read positionally, and one method only.
        assert_eq!(
            parse_jsonrpc(br#"["2.0","message/send",1]"#),
            Err(JsonRpcError::InvalidRequest)
        );
        assert_eq!(
            parse_jsonrpc(br#"{"jsonrpc":"2.0","method":"tasks/get","method":"message/send"}"#),
            Err(JsonRpcError::InvalidRequest)
        );
        assert_eq!(
            parse_jsonrpc(br#"{"jsonrpc":"2.0","method":"x","params":{"a":[1,{"b":null}]}} "#)
                .unwrap()
                .method,
            "x"
        );
        assert_eq!(
            parse_jsonrpc(br#"{"jsonrpc":"1.0","method":"x"}"#),
            Err(JsonRpcError::InvalidRequest)
        );
        assert_eq!(
            parse_jsonrpc(br#"{"jsonrpc":"2.0","method":5}"#),
            Err(JsonRpcError::InvalidRequest)
        );
    }
}
