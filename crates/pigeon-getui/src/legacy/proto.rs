//! The protobuf messages of the legacy protocol that travel over HTTP (getui.md A.5, proto2,
//! package `com.gexin.rp.sdk.dto`), written by hand for `prost`. proto2 `required` fields are
//! plain fields: prost does not check their presence, so the template reader checks what it
//! needs. Enums are read as their numbers.

use prost::Message;

/// `clientData`: the message content of every push action.
#[derive(Clone, PartialEq, Message)]
pub struct Transparent {
    #[prost(string, required, tag = "1")]
    pub id: String,
    #[prost(string, required, tag = "2")]
    pub action: String,
    #[prost(string, required, tag = "3")]
    pub task_id: String,
    #[prost(string, required, tag = "4")]
    pub app_key: String,
    #[prost(string, required, tag = "5")]
    pub app_id: String,
    #[prost(string, required, tag = "6")]
    pub message_id: String,
    #[prost(message, optional, tag = "7")]
    pub push_info: Option<PushInfo>,
    #[prost(message, repeated, tag = "8")]
    pub action_chain: Vec<ActionChain>,
    #[prost(string, repeated, tag = "9")]
    pub condition: Vec<String>,
    #[prost(int32, optional, tag = "10")]
    pub template_id: Option<i32>,
    #[prost(string, optional, tag = "11")]
    pub task_group_id: Option<String>,
    #[prost(message, optional, tag = "12")]
    pub sms_info: Option<SmsInfo>,
}

/// iOS/APNs and vendor-channel information; also the `PI` of the APN actions.
#[derive(Clone, PartialEq, Message)]
pub struct PushInfo {
    #[prost(string, optional, tag = "1")]
    pub message: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub action_key: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub sound: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub badge: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub payload: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub loc_key: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub loc_args: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub action_loc_key: Option<String>,
    #[prost(string, optional, tag = "9")]
    pub launch_image: Option<String>,
    #[prost(int32, optional, tag = "10")]
    pub content_available: Option<i32>,
    /// True (the default) means no APNs payload.
    #[prost(bool, optional, tag = "11", default = "true")]
    pub invalid_apn: Option<bool>,
    #[prost(string, optional, tag = "12")]
    pub apn_json: Option<String>,
    #[prost(bool, optional, tag = "13")]
    pub invalid_mpn: Option<bool>,
    #[prost(string, optional, tag = "14")]
    pub mpn_xml: Option<String>,
    #[prost(bool, optional, tag = "15")]
    pub valid_notify: Option<bool>,
    #[prost(message, optional, tag = "16")]
    pub notify_info: Option<NotifyInfo>,
    #[prost(string, repeated, tag = "17")]
    pub black_thirdparty: Vec<String>,
}

/// The vendor-channel notification of a TransmissionTemplate.
#[derive(Clone, PartialEq, Message)]
pub struct NotifyInfo {
    #[prost(string, required, tag = "1")]
    pub title: String,
    #[prost(string, required, tag = "2")]
    pub content: String,
    #[prost(string, optional, tag = "3")]
    pub payload: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub intent: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub url: Option<String>,
    /// 0 payload, 1 intent, 2 url, 3 start the app.
    #[prost(int32, optional, tag = "6")]
    pub r#type: Option<i32>,
    #[prost(string, optional, tag = "7")]
    pub notify_id: Option<String>,
    #[prost(message, repeated, tag = "8")]
    pub ext_kv: Vec<ExtKv>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ExtKv {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
    /// Which vendor it is for: HW, XM, MZ, OP, VV, FCM, ALL.
    #[prost(string, optional, tag = "3")]
    pub constains: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Button {
    #[prost(string, optional, tag = "1")]
    pub text: Option<String>,
    #[prost(int32, optional, tag = "2")]
    pub next: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AppStartUp {
    #[prost(string, optional, tag = "1")]
    pub android: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub symbia: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub ios: Option<String>,
}

/// One node of a template's action chain.
#[derive(Clone, PartialEq, Message)]
pub struct ActionChain {
    #[prost(int32, required, tag = "1")]
    pub action_id: i32,
    /// See [`node`] for the numbers.
    #[prost(int32, required, tag = "2")]
    pub r#type: i32,
    #[prost(int32, optional, tag = "3")]
    pub next: Option<i32>,
    #[prost(string, optional, tag = "100")]
    pub logo: Option<String>,
    #[prost(string, optional, tag = "101")]
    pub logo_url: Option<String>,
    #[prost(string, optional, tag = "102")]
    pub title: Option<String>,
    #[prost(string, optional, tag = "103")]
    pub text: Option<String>,
    #[prost(bool, optional, tag = "104")]
    pub clearable: Option<bool>,
    #[prost(bool, optional, tag = "105")]
    pub ring: Option<bool>,
    #[prost(bool, optional, tag = "106")]
    pub buzz: Option<bool>,
    #[prost(string, optional, tag = "107")]
    pub banner_url: Option<String>,
    #[prost(string, optional, tag = "120")]
    pub img: Option<String>,
    #[prost(message, repeated, tag = "121")]
    pub buttons: Vec<Button>,
    #[prost(string, optional, tag = "140")]
    pub appid: Option<String>,
    #[prost(message, optional, tag = "141")]
    pub appstartupid: Option<AppStartUp>,
    #[prost(bool, optional, tag = "142")]
    pub autostart: Option<bool>,
    #[prost(int32, optional, tag = "143")]
    pub failed_action: Option<i32>,
    #[prost(string, optional, tag = "160")]
    pub url: Option<String>,
    #[prost(string, optional, tag = "161")]
    pub withcid: Option<String>,
    #[prost(bool, optional, tag = "162", default = "false")]
    pub is_withnettype: Option<bool>,
    #[prost(string, optional, tag = "180")]
    pub address: Option<String>,
    #[prost(string, optional, tag = "181")]
    pub content: Option<String>,
    #[prost(int64, optional, tag = "182")]
    pub ct: Option<i64>,
    #[prost(int32, optional, tag = "183")]
    pub flag: Option<i32>,
    #[prost(int32, optional, tag = "200")]
    pub successed_action: Option<i32>,
    #[prost(int32, optional, tag = "201")]
    pub uninstalled_action: Option<i32>,
    #[prost(string, optional, tag = "220")]
    pub name: Option<String>,
    #[prost(bool, optional, tag = "223")]
    pub auto_install: Option<bool>,
    #[prost(bool, optional, tag = "225")]
    pub wifi_autodownload: Option<bool>,
    #[prost(bool, optional, tag = "226")]
    pub force_download: Option<bool>,
    #[prost(bool, optional, tag = "227")]
    pub show_progress: Option<bool>,
    #[prost(string, optional, tag = "241")]
    pub post: Option<String>,
    #[prost(string, optional, tag = "242")]
    pub headers: Option<String>,
    #[prost(bool, optional, tag = "260")]
    pub groupable: Option<bool>,
    #[prost(string, optional, tag = "280")]
    pub mms_title: Option<String>,
    #[prost(string, optional, tag = "281")]
    pub mms_url: Option<String>,
    #[prost(bool, optional, tag = "300")]
    pub preload: Option<bool>,
    #[prost(string, optional, tag = "320")]
    pub taskid: Option<String>,
    #[prost(int64, optional, tag = "340")]
    pub duration: Option<i64>,
    #[prost(string, optional, tag = "360")]
    pub date: Option<String>,
    #[prost(string, optional, tag = "380")]
    pub stype: Option<String>,
    #[prost(message, repeated, tag = "381")]
    pub field: Vec<InnerFiled>,
}

/// A typed key/value of a style node (`InnerFiled`, sic).
#[derive(Clone, PartialEq, Message)]
pub struct InnerFiled {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub val: String,
    /// 0 str, 1 int32, 2 int64, 3 float, 4 double, 5 bool.
    #[prost(int32, required, tag = "3")]
    pub r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct SmsContentEntry {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

/// The SMS supplement of a template (`setSmsInfo`).
#[derive(Clone, PartialEq, Message)]
pub struct SmsInfo {
    #[prost(string, required, tag = "1")]
    pub sms_template_id: String,
    #[prost(message, repeated, tag = "2")]
    pub sms_content: Vec<SmsContentEntry>,
    /// ms after the push at which the SMS goes if the push has not arrived.
    #[prost(int64, required, tag = "3")]
    pub offline_sendtime: i64,
    #[prost(int64, optional, tag = "4")]
    pub sms_send_duration: Option<i64>,
    #[prost(bool, optional, tag = "5", default = "false")]
    pub sms_checked: Option<bool>,
    #[prost(string, optional, tag = "6")]
    pub sms_checked_error_msg: Option<String>,
}

/// `singleDatas` of `pushMessageToSingleBatchAction`.
#[derive(Clone, PartialEq, Message)]
pub struct SingleBatchRequest {
    #[prost(string, required, tag = "1")]
    pub batch_id: String,
    #[prost(message, repeated, tag = "2")]
    pub batch_item: Vec<SingleBatchItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SingleBatchItem {
    #[prost(int32, required, tag = "1")]
    pub seq_id: i32,
    /// A JSON object with the fields of a `pushMessageToSingleAction` body.
    #[prost(string, required, tag = "2")]
    pub data: String,
}

/// `ActionChain.type` numbers.
pub mod node {
    pub const GOTO: i32 = 0;
    pub const NOTIFICATION: i32 = 1;
    pub const POPUP: i32 = 2;
    pub const STARTAPP: i32 = 3;
    pub const STARTWEB: i32 = 4;
    pub const APPDOWNLOAD: i32 = 8;
    pub const MMSINBOX2: i32 = 12;
    pub const EOA: i32 = 7;
}

/// `InnerFiled.type` numbers.
pub mod field_type {
    pub const STR: i32 = 0;
    pub const INT32: i32 = 1;
    pub const INT64: i32 = 2;
    pub const FLOAT: i32 = 3;
    pub const DOUBLE: i32 = 4;
    pub const BOOL: i32 = 5;
}

/// Why a base64 protobuf could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("{0} is not valid base64")]
    Base64(&'static str),
    #[error("{0} is not a valid protobuf message: {1}")]
    Protobuf(&'static str, String),
}

/// Decodes `field`, standard base64 (padded or not, whitespace and newlines ignored: the
/// SDK sends `PI` as MIME base64), then the protobuf message.
pub fn decode_b64<M: Message + Default>(field: &'static str, text: &str) -> Result<M, DecodeError> {
    use base64::Engine as _;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let trimmed = compact.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .map_err(|_| DecodeError::Base64(field))?;
    M::decode(bytes.as_slice()).map_err(|e| DecodeError::Protobuf(field, e.to_string()))
}
