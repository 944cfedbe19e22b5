//! The built-in dictionary: static tables for the RFC 6733 base protocol,
//! RFC 4006 Credit-Control, the RFC 7155 / RFC 5447 / RFC 5778 AVPs that 3GPP
//! applications reuse, and the common 3GPP AVPs of Gx (TS 29.212), Rx
//! (TS 29.214), Gy/Ro (TS 32.299), S6a/S6d and S13 (TS 29.272), Cx/Sh
//! (TS 29.229, TS 29.329) and Gi (TS 29.061).
//!
//! Everything here is data: [`build`] walks the tables once, when
//! [`Dictionary::base`] is first used.

use super::{AvpDef, CommandDef, Dictionary, FlagRule};
use crate::types::DataType;

/// One AVP definition.
struct Entry {
    code: u32,
    name: &'static str,
    data_type: DataType,
    mandatory: FlagRule,
    values: &'static [(i64, &'static str)],
}

/// An AVP without named values.
const fn a(code: u32, name: &'static str, data_type: DataType, mandatory: FlagRule) -> Entry {
    Entry { code, name, data_type, mandatory, values: &[] }
}

/// An AVP with named values (Enumerated, or named Unsigned32 codes).
const fn e(
    code: u32,
    name: &'static str,
    data_type: DataType,
    mandatory: FlagRule,
    values: &'static [(i64, &'static str)],
) -> Entry {
    Entry { code, name, data_type, mandatory, values }
}

const OCTETS: DataType = DataType::OctetString;
const I32: DataType = DataType::Integer32;
const I64: DataType = DataType::Integer64;
const U32: DataType = DataType::Unsigned32;
const U64: DataType = DataType::Unsigned64;
const UTF8: DataType = DataType::Utf8String;
const IDENT: DataType = DataType::DiameterIdentity;
const URI: DataType = DataType::DiameterUri;
const ENUM: DataType = DataType::Enumerated;
const GROUPED: DataType = DataType::Grouped;
const TIME: DataType = DataType::Time;
const ADDRESS: DataType = DataType::Address;
const FILTER: DataType = DataType::IpFilterRule;

/// M flag "MUST".
const M: FlagRule = FlagRule::Must;
/// M flag "MUST NOT".
const NOT_M: FlagRule = FlagRule::MustNot;
/// M flag "MAY".
const MAY_M: FlagRule = FlagRule::May;

const VENDOR_3GPP: u32 = 10_415;

/// Vendors: (Vendor-Id, name).
const VENDORS: &[(u32, &str)] = &[(VENDOR_3GPP, "3GPP"), (13_019, "ETSI"), (5_535, "3GPP2")];

/// Applications: (Application-Id, name).
const APPLICATIONS: &[(u32, &str)] = &[
    (0, "Diameter Common Messages"),
    (1, "NASREQ"),
    (3, "Diameter Base Accounting"),
    (4, "Diameter Credit-Control"),
    (16_777_216, "3GPP Cx"),
    (16_777_217, "3GPP Sh"),
    (16_777_236, "3GPP Rx"),
    (16_777_238, "3GPP Gx"),
    (16_777_251, "3GPP S6a/S6d"),
    (16_777_252, "3GPP S13/S13'"),
    (0xffff_ffff, "Relay"),
];

/// Commands: (Command-Code, name without -Request/-Answer).
const COMMANDS: &[(u32, &str)] = &[
    // RFC 6733 §3.1
    (257, "Capabilities-Exchange"),
    (258, "Re-Auth"),
    (271, "Accounting"),
    (274, "Abort-Session"),
    (275, "Session-Termination"),
    (280, "Device-Watchdog"),
    (282, "Disconnect-Peer"),
    // RFC 7155 (also Rx), RFC 4006
    (265, "AA"),
    (272, "Credit-Control"),
    // TS 29.272 §7.2 (S6a/S6d, S13)
    (316, "Update-Location"),
    (317, "Cancel-Location"),
    (318, "Authentication-Information"),
    (319, "Insert-Subscriber-Data"),
    (320, "Delete-Subscriber-Data"),
    (321, "Purge-UE"),
    (322, "Reset"),
    (323, "Notify"),
    (324, "ME-Identity-Check"),
];

/// AVP tables, one per vendor (0: IETF).
const TABLES: &[(u32, &[Entry])] = &[(0, IETF), (VENDOR_3GPP, TGPP)];

// ---------------------------------------------------------------------------
// Named values
// ---------------------------------------------------------------------------

/// Result-Code values: RFC 6733 §7.1 and RFC 4006 §9.
const RESULT_CODES: &[(i64, &str)] = &[
    (1001, "DIAMETER_MULTI_ROUND_AUTH"),
    (2001, "DIAMETER_SUCCESS"),
    (2002, "DIAMETER_LIMITED_SUCCESS"),
    (3001, "DIAMETER_COMMAND_UNSUPPORTED"),
    (3002, "DIAMETER_UNABLE_TO_DELIVER"),
    (3003, "DIAMETER_REALM_NOT_SERVED"),
    (3004, "DIAMETER_TOO_BUSY"),
    (3005, "DIAMETER_LOOP_DETECTED"),
    (3006, "DIAMETER_REDIRECT_INDICATION"),
    (3007, "DIAMETER_APPLICATION_UNSUPPORTED"),
    (3008, "DIAMETER_INVALID_HDR_BITS"),
    (3009, "DIAMETER_INVALID_AVP_BITS"),
    (3010, "DIAMETER_UNKNOWN_PEER"),
    (4001, "DIAMETER_AUTHENTICATION_REJECTED"),
    (4002, "DIAMETER_OUT_OF_SPACE"),
    (4003, "ELECTION_LOST"),
    (4010, "DIAMETER_END_USER_SERVICE_DENIED"),
    (4011, "DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE"),
    (4012, "DIAMETER_CREDIT_LIMIT_REACHED"),
    (5001, "DIAMETER_AVP_UNSUPPORTED"),
    (5002, "DIAMETER_UNKNOWN_SESSION_ID"),
    (5003, "DIAMETER_AUTHORIZATION_REJECTED"),
    (5004, "DIAMETER_INVALID_AVP_VALUE"),
    (5005, "DIAMETER_MISSING_AVP"),
    (5006, "DIAMETER_RESOURCES_EXCEEDED"),
    (5007, "DIAMETER_CONTRADICTING_AVPS"),
    (5008, "DIAMETER_AVP_NOT_ALLOWED"),
    (5009, "DIAMETER_AVP_OCCURS_TOO_MANY_TIMES"),
    (5010, "DIAMETER_NO_COMMON_APPLICATION"),
    (5011, "DIAMETER_UNSUPPORTED_VERSION"),
    (5012, "DIAMETER_UNABLE_TO_COMPLY"),
    (5013, "DIAMETER_INVALID_BIT_IN_HEADER"),
    (5014, "DIAMETER_INVALID_AVP_LENGTH"),
    (5015, "DIAMETER_INVALID_MESSAGE_LENGTH"),
    (5016, "DIAMETER_INVALID_AVP_BIT_COMBO"),
    (5017, "DIAMETER_NO_COMMON_SECURITY"),
    (5030, "DIAMETER_USER_UNKNOWN"),
    (5031, "DIAMETER_RATING_FAILED"),
];

/// Experimental-Result-Code values of the 3GPP applications here: Gx
/// (TS 29.212 §5.5), Rx (TS 29.214 §5.5) and S6a/S13 (TS 29.272 §7.4).
/// The codes are only meaningful with the Vendor-Id of the enclosing
/// Experimental-Result; every one listed is a 3GPP code.
const EXPERIMENTAL_RESULT_CODES: &[(i64, &str)] = &[
    (4141, "DIAMETER_PCC_BEARER_EVENT"),
    (4143, "DIAMETER_AN_GW_FAILED"),
    (4144, "DIAMETER_PENDING_TRANSACTION"),
    (4181, "DIAMETER_AUTHENTICATION_DATA_UNAVAILABLE"),
    (4182, "DIAMETER_ERROR_CAMEL_SUBSCRIPTION_PRESENT"),
    (5001, "DIAMETER_ERROR_USER_UNKNOWN"),
    (5004, "DIAMETER_ERROR_ROAMING_NOT_ALLOWED"),
    (5061, "INVALID_SERVICE_INFORMATION"),
    (5062, "FILTER_RESTRICTIONS"),
    (5063, "REQUESTED_SERVICE_NOT_AUTHORIZED"),
    (5064, "DUPLICATED_AF_SESSION"),
    (5065, "IP-CAN_SESSION_NOT_AVAILABLE"),
    (5066, "UNAUTHORIZED_NON_EMERGENCY_SESSION"),
    (5067, "UNAUTHORIZED_SPONSORED_DATA_CONNECTIVITY"),
    (5068, "TEMPORARY_NETWORK_FAILURE"),
    (5140, "DIAMETER_ERROR_INITIAL_PARAMETERS"),
    (5141, "DIAMETER_ERROR_TRIGGER_EVENT"),
    (5142, "DIAMETER_PCC_RULE_EVENT"),
    (5143, "DIAMETER_ERROR_BEARER_NOT_AUTHORIZED"),
    (5144, "DIAMETER_ERROR_TRAFFIC_MAPPING_INFO_REJECTED"),
    (5147, "DIAMETER_ERROR_CONFLICTING_REQUEST"),
    (5148, "DIAMETER_ADC_RULE_EVENT"),
    (5420, "DIAMETER_ERROR_UNKNOWN_EPS_SUBSCRIPTION"),
    (5421, "DIAMETER_ERROR_RAT_NOT_ALLOWED"),
    (5422, "DIAMETER_ERROR_EQUIPMENT_UNKNOWN"),
    // Spelled this way in TS 29.272 §7.4.3.4.
    (5423, "DIAMETER_ERROR_UNKOWN_SERVING_NODE"),
];

const DISCONNECT_CAUSE: &[(i64, &str)] = &[(0, "REBOOTING"), (1, "BUSY"), (2, "DO_NOT_WANT_TO_TALK_TO_YOU")];
const AUTH_REQUEST_TYPE: &[(i64, &str)] =
    &[(1, "AUTHENTICATE_ONLY"), (2, "AUTHORIZE_ONLY"), (3, "AUTHORIZE_AUTHENTICATE")];
const AUTH_SESSION_STATE: &[(i64, &str)] = &[(0, "STATE_MAINTAINED"), (1, "NO_STATE_MAINTAINED")];
const RE_AUTH_REQUEST_TYPE: &[(i64, &str)] = &[(0, "AUTHORIZE_ONLY"), (1, "AUTHORIZE_AUTHENTICATE")];
const ACCOUNTING_RECORD_TYPE: &[(i64, &str)] =
    &[(1, "EVENT_RECORD"), (2, "START_RECORD"), (3, "INTERIM_RECORD"), (4, "STOP_RECORD")];
const ACCOUNTING_REALTIME_REQUIRED: &[(i64, &str)] =
    &[(1, "DELIVER_AND_GRANT"), (2, "GRANT_AND_STORE"), (3, "GRANT_AND_LOSE")];
const REDIRECT_HOST_USAGE: &[(i64, &str)] = &[
    (0, "DONT_CACHE"),
    (1, "ALL_SESSION"),
    (2, "ALL_REALM"),
    (3, "REALM_AND_APPLICATION"),
    (4, "ALL_APPLICATION"),
    (5, "ALL_HOST"),
    (6, "ALL_USER"),
];
const SESSION_SERVER_FAILOVER: &[(i64, &str)] =
    &[(0, "REFUSE_SERVICE"), (1, "TRY_AGAIN"), (2, "ALLOW_SERVICE"), (3, "TRY_AGAIN_ALLOW_SERVICE")];
const TERMINATION_CAUSE: &[(i64, &str)] = &[
    (1, "DIAMETER_LOGOUT"),
    (2, "DIAMETER_SERVICE_NOT_PROVIDED"),
    (3, "DIAMETER_BAD_ANSWER"),
    (4, "DIAMETER_ADMINISTRATIVE"),
    (5, "DIAMETER_LINK_BROKEN"),
    (6, "DIAMETER_AUTH_EXPIRED"),
    (7, "DIAMETER_USER_MOVED"),
    (8, "DIAMETER_SESSION_TIMEOUT"),
];
const INBAND_SECURITY_ID: &[(i64, &str)] = &[(0, "NO_INBAND_SECURITY"), (1, "TLS")];

// RFC 4006 §8.
const CC_REQUEST_TYPE: &[(i64, &str)] =
    &[(1, "INITIAL_REQUEST"), (2, "UPDATE_REQUEST"), (3, "TERMINATION_REQUEST"), (4, "EVENT_REQUEST")];
const CC_SESSION_FAILOVER: &[(i64, &str)] = &[(0, "FAILOVER_NOT_SUPPORTED"), (1, "FAILOVER_SUPPORTED")];
const CC_UNIT_TYPE: &[(i64, &str)] = &[
    (0, "TIME"),
    (1, "MONEY"),
    (2, "TOTAL-OCTETS"),
    (3, "INPUT-OCTETS"),
    (4, "OUTPUT-OCTETS"),
    (5, "SERVICE-SPECIFIC-UNITS"),
];
const CHECK_BALANCE_RESULT: &[(i64, &str)] = &[(0, "ENOUGH_CREDIT"), (1, "NO_CREDIT")];
const CREDIT_CONTROL: &[(i64, &str)] = &[(0, "CREDIT_AUTHORIZATION"), (1, "RE_AUTHORIZATION")];
const CREDIT_CONTROL_FAILURE_HANDLING: &[(i64, &str)] =
    &[(0, "TERMINATE"), (1, "CONTINUE"), (2, "RETRY_AND_TERMINATE")];
const DIRECT_DEBITING_FAILURE_HANDLING: &[(i64, &str)] = &[(0, "TERMINATE_OR_BUFFER"), (1, "CONTINUE")];
const FINAL_UNIT_ACTION: &[(i64, &str)] = &[(0, "TERMINATE"), (1, "REDIRECT"), (2, "RESTRICT_ACCESS")];
const MULTIPLE_SERVICES_INDICATOR: &[(i64, &str)] =
    &[(0, "MULTIPLE_SERVICES_NOT_SUPPORTED"), (1, "MULTIPLE_SERVICES_SUPPORTED")];
const REDIRECT_ADDRESS_TYPE: &[(i64, &str)] = &[(0, "IPv4 Address"), (1, "IPv6 Address"), (2, "URL"), (3, "SIP URI")];
const REQUESTED_ACTION: &[(i64, &str)] =
    &[(0, "DIRECT_DEBITING"), (1, "REFUND_ACCOUNT"), (2, "CHECK_BALANCE"), (3, "PRICE_ENQUIRY")];
const SUBSCRIPTION_ID_TYPE: &[(i64, &str)] = &[
    (0, "END_USER_E164"),
    (1, "END_USER_IMSI"),
    (2, "END_USER_SIP_URI"),
    (3, "END_USER_NAI"),
    (4, "END_USER_PRIVATE"),
];
const TARIFF_CHANGE_USAGE: &[(i64, &str)] =
    &[(0, "UNIT_BEFORE_TARIFF_CHANGE"), (1, "UNIT_AFTER_TARIFF_CHANGE"), (2, "UNIT_INDETERMINATE")];
const USER_EQUIPMENT_INFO_TYPE: &[(i64, &str)] = &[(0, "IMEISV"), (1, "MAC"), (2, "EUI64"), (3, "MODIFIED_EUI64")];

// TS 29.061 §16.4.7.
const TGPP_PDP_TYPE: &[(i64, &str)] = &[(0, "IPv4"), (1, "PPP"), (2, "IPv6"), (3, "IPv4v6"), (4, "Non-IP")];

// TS 29.212 §5.3.
const BEARER_USAGE: &[(i64, &str)] = &[(0, "GENERAL"), (1, "IMS_SIGNALLING")];
const EVENT_TRIGGER: &[(i64, &str)] = &[
    (0, "SGSN_CHANGE"),
    (1, "QOS_CHANGE"),
    (2, "RAT_CHANGE"),
    (3, "TFT_CHANGE"),
    (4, "PLMN_CHANGE"),
    (5, "LOSS_OF_BEARER"),
    (6, "RECOVERY_OF_BEARER"),
    (7, "IP-CAN_CHANGE"),
    (11, "QOS_CHANGE_EXCEEDING_AUTHORIZATION"),
    (12, "RAI_CHANGE"),
    (13, "USER_LOCATION_CHANGE"),
    (14, "NO_EVENT_TRIGGERS"),
    (15, "OUT_OF_CREDIT"),
    (16, "REALLOCATION_OF_CREDIT"),
    (17, "REVALIDATION_TIMEOUT"),
    (18, "UE_IP_ADDRESS_ALLOCATE"),
    (19, "UE_IP_ADDRESS_RELEASE"),
    (20, "DEFAULT_EPS_BEARER_QOS_CHANGE"),
    (21, "AN_GW_CHANGE"),
    (22, "SUCCESSFUL_RESOURCE_ALLOCATION"),
    (23, "RESOURCE_MODIFICATION_REQUEST"),
    (24, "PGW_TRACE_CONTROL"),
    (25, "UE_TIME_ZONE_CHANGE"),
    (26, "TAI_CHANGE"),
    (27, "ECGI_CHANGE"),
    (28, "CHARGING_CORRELATION_EXCHANGE"),
    (29, "APN-AMBR_MODIFICATION_FAILURE"),
    (30, "USER_CSG_INFORMATION_CHANGE"),
    (33, "USAGE_REPORT"),
    (34, "DEFAULT-EPS-BEARER-QOS_MODIFICATION_FAILURE"),
    (35, "USER_CSG_HYBRID_SUBSCRIBED_INFORMATION_CHANGE"),
    (36, "USER_CSG_HYBRID_UNSUBSCRIBED_INFORMATION_CHANGE"),
    (37, "ROUTING_RULE_CHANGE"),
    (39, "APPLICATION_START"),
    (40, "APPLICATION_STOP"),
    (42, "CS_TO_PS_HANDOVER"),
    (43, "UE_LOCAL_IP_ADDRESS_CHANGE"),
    (44, "H(E)NB_LOCAL_IP_ADDRESS_CHANGE"),
    (45, "ACCESS_NETWORK_INFO_REPORT"),
    (46, "CREDIT_MANAGEMENT_SESSION_FAILURE"),
    (47, "DEFAULT_QOS_CHANGE"),
    (48, "CHANGE_OF_UE_PRESENCE_IN_PRESENCE_REPORTING_AREA_REPORT"),
];
const METERING_METHOD: &[(i64, &str)] = &[(0, "DURATION"), (1, "VOLUME"), (2, "DURATION_VOLUME"), (3, "EVENT")];
const OFFLINE: &[(i64, &str)] = &[(0, "DISABLE_OFFLINE"), (1, "ENABLE_OFFLINE")];
const ONLINE: &[(i64, &str)] = &[(0, "DISABLE_ONLINE"), (1, "ENABLE_ONLINE")];
const REPORTING_LEVEL: &[(i64, &str)] =
    &[(0, "SERVICE_IDENTIFIER_LEVEL"), (1, "RATING_GROUP_LEVEL"), (2, "SPONSORED_CONNECTIVITY_LEVEL")];
const PCC_RULE_STATUS: &[(i64, &str)] = &[(0, "ACTIVE"), (1, "INACTIVE"), (2, "TEMPORARILY_INACTIVE")];
const BEARER_OPERATION: &[(i64, &str)] = &[(0, "TERMINATION"), (1, "ESTABLISHMENT"), (2, "MODIFICATION")];
const BEARER_CONTROL_MODE: &[(i64, &str)] = &[(0, "UE_ONLY"), (1, "RESERVED"), (2, "UE_NW")];
const NETWORK_REQUEST_SUPPORT: &[(i64, &str)] =
    &[(0, "NETWORK_REQUEST NOT SUPPORTED"), (1, "NETWORK_REQUEST SUPPORTED")];
const IP_CAN_TYPE: &[(i64, &str)] = &[
    (0, "3GPP-GPRS"),
    (1, "DOCSIS"),
    (2, "xDSL"),
    (3, "WiMAX"),
    (4, "3GPP2"),
    (5, "3GPP-EPS"),
    (6, "Non-3GPP-EPS"),
    (7, "FBA"),
    (8, "3GPP-5GS"),
    (9, "Non-3GPP-5GS"),
];
const QOS_CLASS_IDENTIFIER: &[(i64, &str)] = &[
    (1, "QCI_1"),
    (2, "QCI_2"),
    (3, "QCI_3"),
    (4, "QCI_4"),
    (5, "QCI_5"),
    (6, "QCI_6"),
    (7, "QCI_7"),
    (8, "QCI_8"),
    (9, "QCI_9"),
    (65, "QCI_65"),
    (66, "QCI_66"),
    (69, "QCI_69"),
    (70, "QCI_70"),
    (75, "QCI_75"),
    (79, "QCI_79"),
];
const QOS_NEGOTIATION: &[(i64, &str)] = &[(0, "NO_QoS_NEGOTIATION"), (1, "QoS_NEGOTIATION_SUPPORTED")];
const QOS_UPGRADE: &[(i64, &str)] = &[(0, "QoS_UPGRADE_NOT_SUPPORTED"), (1, "QoS_UPGRADE_SUPPORTED")];
const RULE_FAILURE_CODE: &[(i64, &str)] = &[
    (1, "UNKNOWN_RULE_NAME"),
    (2, "RATING_GROUP_ERROR"),
    (3, "SERVICE_IDENTIFIER_ERROR"),
    (4, "GW/PCEF_MALFUNCTION"),
    (5, "RESOURCES_LIMITATION"),
    (6, "MAX_NR_BEARERS_REACHED"),
    (7, "UNKNOWN_BEARER_ID"),
    (8, "MISSING_BEARER_ID"),
    (9, "MISSING_FLOW_INFORMATION"),
    (10, "RESOURCE_ALLOCATION_FAILURE"),
    (11, "UNSUCCESSFUL_QOS_VALIDATION"),
    (12, "INCORRECT_FLOW_INFORMATION"),
    (13, "PS_TO_CS_HANDOVER"),
];
const RAT_TYPE: &[(i64, &str)] = &[
    (0, "WLAN"),
    (1, "VIRTUAL"),
    (1000, "UTRAN"),
    (1001, "GERAN"),
    (1002, "GAN"),
    (1003, "HSPA_EVOLUTION"),
    (1004, "EUTRAN"),
    (1005, "EUTRAN-NB-IoT"),
    (1006, "NR"),
    (1007, "LTE-M"),
    (2000, "CDMA2000_1X"),
    (2001, "HRPD"),
    (2002, "UMB"),
    (2003, "EHRPD"),
];
const SESSION_RELEASE_CAUSE: &[(i64, &str)] = &[
    (0, "UNSPECIFIED_REASON"),
    (1, "UE_SUBSCRIPTION_REASON"),
    (2, "INSUFFICIENT_SERVER_RESOURCES"),
    (3, "IP_CAN_SESSION_TERMINATION"),
    (4, "UE_IP_ADDRESS_RELEASE"),
];
const PRE_EMPTION_CAPABILITY: &[(i64, &str)] =
    &[(0, "PRE-EMPTION_CAPABILITY_ENABLED"), (1, "PRE-EMPTION_CAPABILITY_DISABLED")];
const PRE_EMPTION_VULNERABILITY: &[(i64, &str)] =
    &[(0, "PRE-EMPTION_VULNERABILITY_ENABLED"), (1, "PRE-EMPTION_VULNERABILITY_DISABLED")];
const PACKET_FILTER_OPERATION: &[(i64, &str)] = &[(0, "DELETION"), (1, "ADDITION"), (2, "MODIFICATION")];
const USAGE_MONITORING_LEVEL: &[(i64, &str)] = &[(0, "SESSION_LEVEL"), (1, "PCC_RULE_LEVEL"), (2, "ADC_RULE_LEVEL")];
const USAGE_MONITORING_REPORT: &[(i64, &str)] = &[(0, "USAGE_MONITORING_REPORT_REQUIRED")];
const USAGE_MONITORING_SUPPORT: &[(i64, &str)] = &[(0, "USAGE_MONITORING_DISABLED")];
const FLOW_DIRECTION: &[(i64, &str)] = &[(0, "UNSPECIFIED"), (1, "DOWNLINK"), (2, "UPLINK"), (3, "BIDIRECTIONAL")];

// TS 29.214 §5.3.
const FLOW_STATUS: &[(i64, &str)] =
    &[(0, "ENABLED-UPLINK"), (1, "ENABLED-DOWNLINK"), (2, "ENABLED"), (3, "DISABLED"), (4, "REMOVED")];
const FLOW_USAGE: &[(i64, &str)] = &[(0, "NO_INFORMATION"), (1, "RTCP"), (2, "AF_SIGNALLING")];
const MEDIA_TYPE: &[(i64, &str)] = &[
    (0, "AUDIO"),
    (1, "VIDEO"),
    (2, "DATA"),
    (3, "APPLICATION"),
    (4, "CONTROL"),
    (5, "TEXT"),
    (6, "MESSAGE"),
    // 0xFFFFFFFF in TS 29.214: -1 as the Integer32 the wire carries.
    (-1, "OTHER"),
];
const ABORT_CAUSE: &[(i64, &str)] = &[
    (0, "BEARER_RELEASED"),
    (1, "INSUFFICIENT_SERVER_RESOURCES"),
    (2, "INSUFFICIENT_BEARER_RESOURCES"),
    (3, "PS_TO_CS_HANDOVER"),
    (4, "SPONSORED_DATA_CONNECTIVITY_DISALLOWED"),
];
const SPECIFIC_ACTION: &[(i64, &str)] = &[
    (1, "CHARGING_CORRELATION_EXCHANGE"),
    (2, "INDICATION_OF_LOSS_OF_BEARER"),
    (3, "INDICATION_OF_RECOVERY_OF_BEARER"),
    (4, "INDICATION_OF_RELEASE_OF_BEARER"),
    (6, "IP-CAN_CHANGE"),
    (7, "INDICATION_OF_OUT_OF_CREDIT"),
    (8, "INDICATION_OF_SUCCESSFUL_RESOURCES_ALLOCATION"),
    (9, "INDICATION_OF_FAILED_RESOURCES_ALLOCATION"),
    (10, "INDICATION_OF_LIMITED_PCC_DEPLOYMENT"),
    (11, "USAGE_REPORT"),
    (12, "ACCESS_NETWORK_INFO_REPORT"),
];

// TS 32.299 §7.2.
const NODE_FUNCTIONALITY: &[(i64, &str)] = &[
    (0, "S-CSCF"),
    (1, "P-CSCF"),
    (2, "I-CSCF"),
    (3, "MRFC"),
    (4, "MGCF"),
    (5, "BGCF"),
    (6, "AS"),
    (7, "IBCF"),
    (8, "S-GW"),
    (9, "P-GW"),
    (10, "HSGW"),
    (11, "E-CSCF"),
    (12, "MME"),
    (13, "TRF"),
    (14, "TF"),
    (15, "ATCF"),
];
const ROLE_OF_NODE: &[(i64, &str)] = &[(0, "ORIGINATING_ROLE"), (1, "TERMINATING_ROLE")];
const REPORTING_REASON: &[(i64, &str)] = &[
    (0, "THRESHOLD"),
    (1, "QHT"),
    (2, "FINAL"),
    (3, "QUOTA_EXHAUSTED"),
    (4, "VALIDITY_TIME"),
    (5, "OTHER_QUOTA_TYPE"),
    (6, "RATING_CONDITION_CHANGE"),
    (7, "FORCED_REAUTHORISATION"),
    (8, "POOL_EXHAUSTED"),
    (9, "UNUSED_QUOTA_TIMER"),
];
const SERVING_NODE_TYPE: &[(i64, &str)] =
    &[(0, "SGSN"), (1, "PMIPSGW"), (2, "GTPSGW"), (3, "ePDG"), (4, "hSGW"), (5, "MME"), (6, "TWAN")];
const PDP_CONTEXT_TYPE: &[(i64, &str)] = &[(0, "PRIMARY"), (1, "SECONDARY")];
const DYNAMIC_ADDRESS_FLAG: &[(i64, &str)] = &[(0, "Static"), (1, "Dynamic")];
const LOW_BALANCE_INDICATION: &[(i64, &str)] = &[(0, "NOT-APPLICABLE"), (1, "YES")];

// TS 29.272 §7.3.
const NETWORK_ACCESS_MODE: &[(i64, &str)] = &[(0, "PACKET_AND_CIRCUIT"), (1, "Reserved"), (2, "ONLY_PACKET")];
const CANCELLATION_TYPE: &[(i64, &str)] = &[
    (0, "MME_UPDATE_PROCEDURE"),
    (1, "SGSN_UPDATE_PROCEDURE"),
    (2, "SUBSCRIPTION_WITHDRAWAL"),
    (3, "UPDATE_PROCEDURE_IWF"),
    (4, "INITIAL_ATTACH_PROCEDURE"),
];
const SUBSCRIBER_STATUS: &[(i64, &str)] = &[(0, "SERVICE_GRANTED"), (1, "OPERATOR_DETERMINED_BARRING")];
const ALL_APN_CONFIGURATIONS_INCLUDED_INDICATOR: &[(i64, &str)] =
    &[(0, "All_APN_CONFIGURATIONS_INCLUDED"), (1, "MODIFIED/ADDED_APN_CONFIGURATIONS_INCLUDED")];
const VPLMN_DYNAMIC_ADDRESS_ALLOWED: &[(i64, &str)] = &[(0, "NOTALLOWED"), (1, "ALLOWED")];
const ALERT_REASON: &[(i64, &str)] = &[(0, "UE_PRESENT"), (1, "UE_MEMORY_AVAILABLE")];
const PDN_GW_ALLOCATION_TYPE: &[(i64, &str)] = &[(0, "STATIC"), (1, "DYNAMIC")];
const EQUIPMENT_STATUS: &[(i64, &str)] = &[(0, "WHITELISTED"), (1, "BLACKLISTED"), (2, "GREYLISTED")];
const PDN_TYPE: &[(i64, &str)] = &[(0, "IPv4"), (1, "IPv6"), (2, "IPv4v6"), (3, "IPv4_OR_IPv6"), (4, "Non-IP")];
const COMPLETE_DATA_LIST_INCLUDED_INDICATOR: &[(i64, &str)] =
    &[(0, "All_PDP_CONTEXTS_INCLUDED"), (1, "MODIFIED/ADDED_PDP CONTEXTS_INCLUDED")];
const IMS_VOICE_OVER_PS_SESSIONS_SUPPORTED: &[(i64, &str)] = &[(0, "NOT_SUPPORTED"), (1, "SUPPORTED")];
const USER_STATE: &[(i64, &str)] = &[
    (0, "DETACHED"),
    (1, "ATTACHED_NOT_REACHABLE_FOR_PAGING"),
    (2, "ATTACHED_REACHABLE_FOR_PAGING"),
    (3, "CONNECTED_NOT_REACHABLE_FOR_PAGING"),
    (4, "CONNECTED_REACHABLE_FOR_PAGING"),
    (5, "NETWORK_DETERMINED_NOT_REACHABLE"),
];
const CURRENT_LOCATION_RETRIEVED: &[(i64, &str)] = &[(0, "ACTIVE-LOCATION-RETRIEVAL")];
const TRACE_DEPTH: &[(i64, &str)] = &[
    (0, "Minimum"),
    (1, "Medium"),
    (2, "Maximum"),
    (3, "MinimumWithoutVendorSpecificExtension"),
    (4, "MediumWithoutVendorSpecificExtension"),
    (5, "MaximumWithoutVendorSpecificExtension"),
];

// ---------------------------------------------------------------------------
// IETF AVPs (Vendor-Id 0)
// ---------------------------------------------------------------------------

const IETF: &[Entry] = &[
    // RFC 6733 §4.5 (and §4.4 for E2E-Sequence).
    a(1, "User-Name", UTF8, M),
    a(25, "Class", OCTETS, M),
    a(27, "Session-Timeout", U32, M),
    a(33, "Proxy-State", OCTETS, M),
    a(44, "Acct-Session-Id", OCTETS, M),
    a(50, "Acct-Multi-Session-Id", UTF8, M),
    a(55, "Event-Timestamp", TIME, M),
    a(85, "Acct-Interim-Interval", U32, M),
    a(257, "Host-IP-Address", ADDRESS, M),
    a(258, "Auth-Application-Id", U32, M),
    a(259, "Acct-Application-Id", U32, M),
    a(260, "Vendor-Specific-Application-Id", GROUPED, M),
    e(261, "Redirect-Host-Usage", ENUM, M, REDIRECT_HOST_USAGE),
    a(262, "Redirect-Max-Cache-Time", U32, M),
    a(263, "Session-Id", UTF8, M),
    a(264, "Origin-Host", IDENT, M),
    a(265, "Supported-Vendor-Id", U32, M),
    a(266, "Vendor-Id", U32, M),
    a(267, "Firmware-Revision", U32, NOT_M),
    e(268, "Result-Code", U32, M, RESULT_CODES),
    a(269, "Product-Name", UTF8, NOT_M),
    a(270, "Session-Binding", U32, M),
    e(271, "Session-Server-Failover", ENUM, M, SESSION_SERVER_FAILOVER),
    a(272, "Multi-Round-Time-Out", U32, M),
    e(273, "Disconnect-Cause", ENUM, M, DISCONNECT_CAUSE),
    e(274, "Auth-Request-Type", ENUM, M, AUTH_REQUEST_TYPE),
    a(276, "Auth-Grace-Period", U32, M),
    e(277, "Auth-Session-State", ENUM, M, AUTH_SESSION_STATE),
    a(278, "Origin-State-Id", U32, M),
    a(279, "Failed-AVP", GROUPED, M),
    a(280, "Proxy-Host", IDENT, M),
    a(281, "Error-Message", UTF8, NOT_M),
    a(282, "Route-Record", IDENT, M),
    a(283, "Destination-Realm", IDENT, M),
    a(284, "Proxy-Info", GROUPED, M),
    e(285, "Re-Auth-Request-Type", ENUM, M, RE_AUTH_REQUEST_TYPE),
    a(287, "Accounting-Sub-Session-Id", U64, M),
    a(291, "Authorization-Lifetime", U32, M),
    a(292, "Redirect-Host", URI, M),
    a(293, "Destination-Host", IDENT, M),
    a(294, "Error-Reporting-Host", IDENT, NOT_M),
    e(295, "Termination-Cause", ENUM, M, TERMINATION_CAUSE),
    a(296, "Origin-Realm", IDENT, M),
    a(297, "Experimental-Result", GROUPED, M),
    e(298, "Experimental-Result-Code", U32, M, EXPERIMENTAL_RESULT_CODES),
    e(299, "Inband-Security-Id", U32, M, INBAND_SECURITY_ID),
    a(300, "E2E-Sequence", GROUPED, M),
    e(480, "Accounting-Record-Type", ENUM, M, ACCOUNTING_RECORD_TYPE),
    e(483, "Accounting-Realtime-Required", ENUM, M, ACCOUNTING_REALTIME_REQUIRED),
    a(485, "Accounting-Record-Number", U32, M),
    // RFC 4006 §8.
    a(411, "CC-Correlation-Id", OCTETS, MAY_M),
    a(412, "CC-Input-Octets", U64, M),
    a(413, "CC-Money", GROUPED, M),
    a(414, "CC-Output-Octets", U64, M),
    a(415, "CC-Request-Number", U32, M),
    e(416, "CC-Request-Type", ENUM, M, CC_REQUEST_TYPE),
    a(417, "CC-Service-Specific-Units", U64, M),
    e(418, "CC-Session-Failover", ENUM, M, CC_SESSION_FAILOVER),
    a(419, "CC-Sub-Session-Id", U64, M),
    a(420, "CC-Time", U32, M),
    a(421, "CC-Total-Octets", U64, M),
    e(422, "Check-Balance-Result", ENUM, M, CHECK_BALANCE_RESULT),
    a(423, "Cost-Information", GROUPED, M),
    a(424, "Cost-Unit", UTF8, M),
    a(425, "Currency-Code", U32, M),
    e(426, "Credit-Control", ENUM, M, CREDIT_CONTROL),
    e(427, "Credit-Control-Failure-Handling", ENUM, M, CREDIT_CONTROL_FAILURE_HANDLING),
    e(428, "Direct-Debiting-Failure-Handling", ENUM, M, DIRECT_DEBITING_FAILURE_HANDLING),
    a(429, "Exponent", I32, M),
    a(430, "Final-Unit-Indication", GROUPED, M),
    a(431, "Granted-Service-Unit", GROUPED, M),
    a(432, "Rating-Group", U32, M),
    e(433, "Redirect-Address-Type", ENUM, M, REDIRECT_ADDRESS_TYPE),
    a(434, "Redirect-Server", GROUPED, M),
    a(435, "Redirect-Server-Address", UTF8, M),
    e(436, "Requested-Action", ENUM, M, REQUESTED_ACTION),
    a(437, "Requested-Service-Unit", GROUPED, M),
    a(438, "Restriction-Filter-Rule", FILTER, M),
    a(439, "Service-Identifier", U32, M),
    a(440, "Service-Parameter-Info", GROUPED, MAY_M),
    a(441, "Service-Parameter-Type", U32, MAY_M),
    a(442, "Service-Parameter-Value", OCTETS, MAY_M),
    a(443, "Subscription-Id", GROUPED, M),
    a(444, "Subscription-Id-Data", UTF8, M),
    a(445, "Unit-Value", GROUPED, M),
    a(446, "Used-Service-Unit", GROUPED, M),
    a(447, "Value-Digits", I64, M),
    a(448, "Validity-Time", U32, M),
    e(449, "Final-Unit-Action", ENUM, M, FINAL_UNIT_ACTION),
    e(450, "Subscription-Id-Type", ENUM, M, SUBSCRIPTION_ID_TYPE),
    a(451, "Tariff-Time-Change", TIME, M),
    e(452, "Tariff-Change-Usage", ENUM, M, TARIFF_CHANGE_USAGE),
    a(453, "G-S-U-Pool-Identifier", U32, M),
    e(454, "CC-Unit-Type", ENUM, M, CC_UNIT_TYPE),
    e(455, "Multiple-Services-Indicator", ENUM, M, MULTIPLE_SERVICES_INDICATOR),
    a(456, "Multiple-Services-Credit-Control", GROUPED, M),
    a(457, "G-S-U-Pool-Reference", GROUPED, M),
    a(458, "User-Equipment-Info", GROUPED, MAY_M),
    e(459, "User-Equipment-Info-Type", ENUM, MAY_M, USER_EQUIPMENT_INFO_TYPE),
    a(460, "User-Equipment-Info-Value", OCTETS, MAY_M),
    a(461, "Service-Context-Id", UTF8, M),
    // RFC 7155 (NASREQ) AVPs reused by Gx, Rx and Gy.
    a(4, "NAS-IP-Address", OCTETS, M),
    a(5, "NAS-Port", U32, M),
    a(8, "Framed-IP-Address", OCTETS, M),
    a(9, "Framed-IP-Netmask", OCTETS, M),
    a(30, "Called-Station-Id", UTF8, M),
    a(31, "Calling-Station-Id", UTF8, M),
    a(32, "NAS-Identifier", UTF8, M),
    a(87, "NAS-Port-Id", UTF8, M),
    a(95, "NAS-IPv6-Address", OCTETS, M),
    a(96, "Framed-Interface-Id", U64, M),
    a(97, "Framed-IPv6-Prefix", OCTETS, M),
    a(363, "Accounting-Input-Octets", U64, M),
    a(364, "Accounting-Output-Octets", U64, M),
    a(365, "Accounting-Input-Packets", U64, M),
    a(366, "Accounting-Output-Packets", U64, M),
    // RFC 4004 / RFC 5447 / RFC 5778 (S6a APN-Configuration).
    a(125, "MIP6-Home-Link-Prefix", OCTETS, M),
    a(334, "MIP-Home-Agent-Address", ADDRESS, M),
    a(348, "MIP-Home-Agent-Host", GROUPED, M),
    a(486, "MIP6-Agent-Info", GROUPED, M),
    a(493, "Service-Selection", UTF8, M),
];

// ---------------------------------------------------------------------------
// 3GPP AVPs (Vendor-Id 10415)
// ---------------------------------------------------------------------------

const TGPP: &[Entry] = &[
    // TS 29.061 §16.4.7: 3GPP vendor-specific AVPs of Gi/SGi, reused by Gx
    // and Gy.
    a(1, "3GPP-IMSI", UTF8, M),
    a(2, "3GPP-Charging-Id", U32, M),
    e(3, "3GPP-PDP-Type", ENUM, M, TGPP_PDP_TYPE),
    a(4, "3GPP-CG-Address", OCTETS, M),
    a(5, "3GPP-GPRS-Negotiated-QoS-Profile", UTF8, M),
    a(6, "3GPP-SGSN-Address", OCTETS, M),
    a(7, "3GPP-GGSN-Address", OCTETS, M),
    a(8, "3GPP-IMSI-MCC-MNC", UTF8, M),
    a(9, "3GPP-GGSN-MCC-MNC", UTF8, M),
    a(10, "3GPP-NSAPI", OCTETS, M),
    a(12, "3GPP-Selection-Mode", UTF8, M),
    a(13, "3GPP-Charging-Characteristics", UTF8, M),
    a(18, "3GPP-SGSN-MCC-MNC", UTF8, M),
    a(20, "3GPP-IMEISV", OCTETS, M),
    a(21, "3GPP-RAT-Type", OCTETS, M),
    a(22, "3GPP-User-Location-Info", OCTETS, M),
    a(23, "3GPP-MS-TimeZone", OCTETS, M),
    // TS 29.214 §5.3 (Rx), reused by Gx.
    e(500, "Abort-Cause", ENUM, M, ABORT_CAUSE),
    a(501, "Access-Network-Charging-Address", ADDRESS, M),
    a(502, "Access-Network-Charging-Identifier", GROUPED, M),
    a(503, "Access-Network-Charging-Identifier-Value", OCTETS, M),
    a(504, "AF-Application-Identifier", OCTETS, M),
    a(505, "AF-Charging-Identifier", OCTETS, M),
    a(507, "Flow-Description", FILTER, M),
    a(509, "Flow-Number", U32, M),
    a(510, "Flows", GROUPED, M),
    e(511, "Flow-Status", ENUM, M, FLOW_STATUS),
    e(512, "Flow-Usage", ENUM, M, FLOW_USAGE),
    e(513, "Specific-Action", ENUM, M, SPECIFIC_ACTION),
    a(515, "Max-Requested-Bandwidth-DL", U32, M),
    a(516, "Max-Requested-Bandwidth-UL", U32, M),
    a(517, "Media-Component-Description", GROUPED, M),
    a(518, "Media-Component-Number", U32, M),
    a(519, "Media-Sub-Component", GROUPED, M),
    e(520, "Media-Type", ENUM, M, MEDIA_TYPE),
    a(521, "RR-Bandwidth", U32, M),
    a(522, "RS-Bandwidth", U32, M),
    a(524, "Codec-Data", OCTETS, M),
    a(525, "Service-URN", OCTETS, M),
    a(526, "Acceptable-Service-Info", GROUPED, M),
    // TS 29.229 §6.3 (Cx/Dx) and TS 29.329 §6.3 (Sh).
    a(600, "Visited-Network-Identifier", OCTETS, M),
    a(601, "Public-Identity", UTF8, M),
    a(602, "Server-Name", UTF8, M),
    a(628, "Supported-Features", GROUPED, NOT_M),
    a(629, "Feature-List-ID", U32, NOT_M),
    a(630, "Feature-List", U32, NOT_M),
    a(701, "MSISDN", OCTETS, M),
    // TS 32.299 §7.2 (Gy/Ro, Rf).
    a(823, "Event-Type", GROUPED, M),
    a(824, "SIP-Method", UTF8, M),
    a(825, "Event", UTF8, M),
    a(826, "Content-Type", UTF8, M),
    a(827, "Content-Length", U32, M),
    a(828, "Content-Disposition", UTF8, M),
    e(829, "Role-Of-Node", ENUM, M, ROLE_OF_NODE),
    a(830, "User-Session-Id", UTF8, M),
    a(831, "Calling-Party-Address", UTF8, M),
    a(832, "Called-Party-Address", UTF8, M),
    a(833, "Time-Stamps", GROUPED, M),
    a(834, "SIP-Request-Timestamp", TIME, M),
    a(835, "SIP-Response-Timestamp", TIME, M),
    a(836, "Application-Server", UTF8, M),
    a(837, "Application-Provided-Called-Party-Address", UTF8, M),
    a(838, "Inter-Operator-Identifier", GROUPED, M),
    a(839, "Originating-IOI", UTF8, M),
    a(840, "Terminating-IOI", UTF8, M),
    a(841, "IMS-Charging-Identifier", UTF8, M),
    a(842, "SDP-Session-Description", UTF8, M),
    a(843, "SDP-Media-Component", GROUPED, M),
    a(844, "SDP-Media-Name", UTF8, M),
    a(845, "SDP-Media-Description", UTF8, M),
    a(846, "CG-Address", ADDRESS, M),
    a(847, "GGSN-Address", ADDRESS, M),
    a(848, "Served-Party-IP-Address", ADDRESS, M),
    a(849, "Authorised-QoS", UTF8, M),
    a(850, "Application-Server-Information", GROUPED, M),
    a(851, "Trunk-Group-Id", GROUPED, M),
    a(852, "Incoming-Trunk-Group-Id", UTF8, M),
    a(853, "Outgoing-Trunk-Group-Id", UTF8, M),
    a(854, "Bearer-Service", OCTETS, M),
    a(855, "Service-Id", UTF8, M),
    a(856, "Associated-URI", UTF8, M),
    a(857, "Charged-Party", UTF8, M),
    a(861, "Cause-Code", I32, M),
    e(862, "Node-Functionality", ENUM, M, NODE_FUNCTIONALITY),
    a(863, "Service-Specific-Data", UTF8, M),
    a(865, "PS-Furnish-Charging-Information", GROUPED, M),
    a(866, "PS-Free-Format-Data", OCTETS, M),
    a(868, "Time-Quota-Threshold", U32, M),
    a(869, "Volume-Quota-Threshold", U32, M),
    a(871, "Quota-Holding-Time", U32, M),
    e(872, "Reporting-Reason", ENUM, M, REPORTING_REASON),
    a(873, "Service-Information", GROUPED, M),
    a(874, "PS-Information", GROUPED, M),
    a(876, "IMS-Information", GROUPED, M),
    a(877, "MMS-Information", GROUPED, M),
    a(1227, "PDP-Address", ADDRESS, MAY_M),
    a(1228, "SGSN-Address", ADDRESS, MAY_M),
    e(1247, "PDP-Context-Type", ENUM, MAY_M, PDP_CONTEXT_TYPE),
    a(1263, "Access-Network-Information", OCTETS, MAY_M),
    a(1265, "Base-Time-Interval", U32, MAY_M),
    a(2000, "SMS-Information", GROUPED, MAY_M),
    e(2020, "Low-Balance-Indication", ENUM, MAY_M, LOW_BALANCE_INDICATION),
    a(2021, "Remaining-Balance", GROUPED, MAY_M),
    a(2037, "Change-Condition", I32, MAY_M),
    a(2038, "Change-Time", TIME, MAY_M),
    a(2039, "Diagnostics", I32, MAY_M),
    a(2040, "Service-Data-Container", GROUPED, MAY_M),
    a(2041, "Start-Time", TIME, MAY_M),
    a(2042, "Stop-Time", TIME, MAY_M),
    a(2043, "Time-First-Usage", TIME, MAY_M),
    a(2044, "Time-Last-Usage", TIME, MAY_M),
    a(2045, "Time-Usage", U32, MAY_M),
    a(2046, "Traffic-Data-Volumes", GROUPED, MAY_M),
    e(2047, "Serving-Node-Type", ENUM, MAY_M, SERVING_NODE_TYPE),
    a(2050, "PDN-Connection-Charging-ID", U32, MAY_M),
    e(2051, "Dynamic-Address-Flag", ENUM, MAY_M, DYNAMIC_ADDRESS_FLAG),
    a(2064, "Node-Id", UTF8, MAY_M),
    // TS 29.212 §5.3 (Gx).
    e(1000, "Bearer-Usage", ENUM, M, BEARER_USAGE),
    a(1001, "Charging-Rule-Install", GROUPED, M),
    a(1002, "Charging-Rule-Remove", GROUPED, M),
    a(1003, "Charging-Rule-Definition", GROUPED, M),
    a(1004, "Charging-Rule-Base-Name", UTF8, M),
    a(1005, "Charging-Rule-Name", OCTETS, M),
    e(1006, "Event-Trigger", ENUM, M, EVENT_TRIGGER),
    e(1007, "Metering-Method", ENUM, M, METERING_METHOD),
    e(1008, "Offline", ENUM, M, OFFLINE),
    e(1009, "Online", ENUM, M, ONLINE),
    a(1010, "Precedence", U32, M),
    e(1011, "Reporting-Level", ENUM, M, REPORTING_LEVEL),
    a(1012, "TFT-Filter", FILTER, M),
    a(1013, "TFT-Packet-Filter-Information", GROUPED, M),
    a(1014, "ToS-Traffic-Class", OCTETS, M),
    a(1016, "QoS-Information", GROUPED, M),
    a(1018, "Charging-Rule-Report", GROUPED, M),
    e(1019, "PCC-Rule-Status", ENUM, M, PCC_RULE_STATUS),
    a(1020, "Bearer-Identifier", OCTETS, M),
    e(1021, "Bearer-Operation", ENUM, M, BEARER_OPERATION),
    a(1022, "Access-Network-Charging-Identifier-Gx", GROUPED, M),
    e(1023, "Bearer-Control-Mode", ENUM, M, BEARER_CONTROL_MODE),
    e(1024, "Network-Request-Support", ENUM, M, NETWORK_REQUEST_SUPPORT),
    a(1025, "Guaranteed-Bitrate-DL", U32, M),
    a(1026, "Guaranteed-Bitrate-UL", U32, M),
    e(1027, "IP-CAN-Type", ENUM, M, IP_CAN_TYPE),
    e(1028, "QoS-Class-Identifier", ENUM, M, QOS_CLASS_IDENTIFIER),
    e(1029, "QoS-Negotiation", ENUM, M, QOS_NEGOTIATION),
    e(1030, "QoS-Upgrade", ENUM, M, QOS_UPGRADE),
    e(1031, "Rule-Failure-Code", ENUM, M, RULE_FAILURE_CODE),
    e(1032, "RAT-Type", ENUM, NOT_M, RAT_TYPE),
    a(1033, "Event-Report-Indication", GROUPED, NOT_M),
    a(1034, "Allocation-Retention-Priority", GROUPED, NOT_M),
    a(1035, "CoA-IP-Address", ADDRESS, NOT_M),
    a(1036, "Tunnel-Header-Filter", FILTER, NOT_M),
    a(1037, "Tunnel-Header-Length", U32, NOT_M),
    a(1038, "Tunnel-Information", GROUPED, NOT_M),
    a(1039, "CoA-Information", GROUPED, NOT_M),
    a(1040, "APN-Aggregate-Max-Bitrate-DL", U32, NOT_M),
    a(1041, "APN-Aggregate-Max-Bitrate-UL", U32, NOT_M),
    a(1042, "Revalidation-Time", TIME, M),
    a(1043, "Rule-Activation-Time", TIME, M),
    a(1044, "Rule-Deactivation-Time", TIME, M),
    e(1045, "Session-Release-Cause", ENUM, M, SESSION_RELEASE_CAUSE),
    a(1046, "Priority-Level", U32, NOT_M),
    e(1047, "Pre-emption-Capability", ENUM, NOT_M, PRE_EMPTION_CAPABILITY),
    e(1048, "Pre-emption-Vulnerability", ENUM, NOT_M, PRE_EMPTION_VULNERABILITY),
    a(1049, "Default-EPS-Bearer-QoS", GROUPED, NOT_M),
    a(1050, "AN-GW-Address", ADDRESS, NOT_M),
    a(1056, "Security-Parameter-Index", OCTETS, NOT_M),
    a(1057, "Flow-Label", OCTETS, NOT_M),
    a(1058, "Flow-Information", GROUPED, NOT_M),
    a(1059, "Packet-Filter-Content", FILTER, NOT_M),
    a(1060, "Packet-Filter-Identifier", OCTETS, NOT_M),
    a(1061, "Packet-Filter-Information", GROUPED, NOT_M),
    e(1062, "Packet-Filter-Operation", ENUM, NOT_M, PACKET_FILTER_OPERATION),
    a(1065, "PDN-Connection-ID", OCTETS, NOT_M),
    a(1066, "Monitoring-Key", OCTETS, NOT_M),
    a(1067, "Usage-Monitoring-Information", GROUPED, NOT_M),
    e(1068, "Usage-Monitoring-Level", ENUM, NOT_M, USAGE_MONITORING_LEVEL),
    e(1069, "Usage-Monitoring-Report", ENUM, NOT_M, USAGE_MONITORING_REPORT),
    e(1070, "Usage-Monitoring-Support", ENUM, NOT_M, USAGE_MONITORING_SUPPORT),
    e(1080, "Flow-Direction", ENUM, NOT_M, FLOW_DIRECTION),
    // TS 29.272 §7.3 (S6a/S6d, S13).
    a(1400, "Subscription-Data", GROUPED, M),
    a(1401, "Terminal-Information", GROUPED, M),
    a(1402, "IMEI", UTF8, M),
    a(1403, "Software-Version", UTF8, M),
    a(1404, "QoS-Subscribed", OCTETS, M),
    a(1405, "ULR-Flags", U32, M),
    a(1406, "ULA-Flags", U32, M),
    a(1407, "Visited-PLMN-Id", OCTETS, M),
    a(1408, "Requested-EUTRAN-Authentication-Info", GROUPED, M),
    a(1409, "Requested-UTRAN-GERAN-Authentication-Info", GROUPED, M),
    a(1410, "Number-Of-Requested-Vectors", U32, M),
    a(1411, "Re-Synchronization-Info", OCTETS, M),
    a(1412, "Immediate-Response-Preferred", U32, M),
    a(1413, "Authentication-Info", GROUPED, M),
    a(1414, "E-UTRAN-Vector", GROUPED, M),
    a(1415, "UTRAN-Vector", GROUPED, M),
    a(1416, "GERAN-Vector", GROUPED, M),
    e(1417, "Network-Access-Mode", ENUM, M, NETWORK_ACCESS_MODE),
    a(1418, "HPLMN-ODB", U32, M),
    a(1419, "Item-Number", U32, M),
    e(1420, "Cancellation-Type", ENUM, M, CANCELLATION_TYPE),
    a(1421, "DSR-Flags", U32, M),
    a(1422, "DSA-Flags", U32, M),
    a(1423, "Context-Identifier", U32, M),
    e(1424, "Subscriber-Status", ENUM, M, SUBSCRIBER_STATUS),
    a(1425, "Operator-Determined-Barring", U32, M),
    a(1426, "Access-Restriction-Data", U32, M),
    a(1427, "APN-OI-Replacement", UTF8, M),
    e(1428, "All-APN-Configurations-Included-Indicator", ENUM, M, ALL_APN_CONFIGURATIONS_INCLUDED_INDICATOR),
    a(1429, "APN-Configuration-Profile", GROUPED, M),
    a(1430, "APN-Configuration", GROUPED, M),
    a(1431, "EPS-Subscribed-QoS-Profile", GROUPED, M),
    e(1432, "VPLMN-Dynamic-Address-Allowed", ENUM, M, VPLMN_DYNAMIC_ADDRESS_ALLOWED),
    a(1433, "STN-SR", OCTETS, M),
    e(1434, "Alert-Reason", ENUM, M, ALERT_REASON),
    a(1435, "AMBR", GROUPED, M),
    a(1436, "CSG-Subscription-Data", GROUPED, M),
    a(1437, "CSG-Id", U32, M),
    e(1438, "PDN-GW-Allocation-Type", ENUM, M, PDN_GW_ALLOCATION_TYPE),
    a(1439, "Expiration-Date", TIME, M),
    a(1440, "RAT-Frequency-Selection-Priority-ID", U32, M),
    a(1441, "IDA-Flags", U32, M),
    a(1442, "PUA-Flags", U32, M),
    a(1443, "NOR-Flags", U32, M),
    a(1444, "User-Id", UTF8, NOT_M),
    e(1445, "Equipment-Status", ENUM, M, EQUIPMENT_STATUS),
    a(1446, "Regional-Subscription-Zone-Code", OCTETS, M),
    a(1447, "RAND", OCTETS, M),
    a(1448, "XRES", OCTETS, M),
    a(1449, "AUTN", OCTETS, M),
    a(1450, "KASME", OCTETS, M),
    a(1452, "Trace-Collection-Entity", ADDRESS, M),
    a(1453, "Kc", OCTETS, M),
    a(1454, "SRES", OCTETS, M),
    e(1456, "PDN-Type", ENUM, M, PDN_TYPE),
    a(1458, "Trace-Data", GROUPED, M),
    a(1459, "Trace-Reference", OCTETS, M),
    e(1462, "Trace-Depth", ENUM, M, TRACE_DEPTH),
    a(1463, "Trace-NE-Type-List", OCTETS, M),
    a(1464, "Trace-Interface-List", OCTETS, M),
    a(1465, "Trace-Event-List", OCTETS, M),
    a(1466, "OMC-Id", OCTETS, M),
    a(1467, "GPRS-Subscription-Data", GROUPED, M),
    e(1468, "Complete-Data-List-Included-Indicator", ENUM, M, COMPLETE_DATA_LIST_INCLUDED_INDICATOR),
    a(1469, "PDP-Context", GROUPED, M),
    a(1470, "PDP-Type", OCTETS, M),
    a(1471, "3GPP2-MEID", OCTETS, M),
    a(1472, "Specific-APN-Info", GROUPED, M),
    a(1489, "SGSN-Number", OCTETS, M),
    a(1490, "IDR-Flags", U32, NOT_M),
    e(1492, "IMS-Voice-Over-PS-Sessions-Supported", ENUM, NOT_M, IMS_VOICE_OVER_PS_SESSIONS_SUPPORTED),
    a(1494, "Last-UE-Activity-Time", TIME, NOT_M),
    a(1495, "EPS-User-State", GROUPED, NOT_M),
    a(1496, "EPS-Location-Information", GROUPED, NOT_M),
    a(1497, "MME-User-State", GROUPED, NOT_M),
    a(1498, "SGSN-User-State", GROUPED, NOT_M),
    e(1499, "User-State", ENUM, NOT_M, USER_STATE),
    a(1600, "MME-Location-Information", GROUPED, NOT_M),
    a(1601, "SGSN-Location-Information", GROUPED, NOT_M),
    a(1602, "E-UTRAN-Cell-Global-Identity", OCTETS, NOT_M),
    a(1603, "Tracking-Area-Identity", OCTETS, NOT_M),
    a(1604, "Cell-Global-Identity", OCTETS, NOT_M),
    a(1605, "Routing-Area-Identity", OCTETS, NOT_M),
    a(1606, "Location-Area-Identity", OCTETS, NOT_M),
    a(1607, "Service-Area-Identity", OCTETS, NOT_M),
    a(1608, "Geographical-Information", OCTETS, NOT_M),
    a(1609, "Geodetic-Information", OCTETS, NOT_M),
    e(1610, "Current-Location-Retrieved", ENUM, NOT_M, CURRENT_LOCATION_RETRIEVED),
    a(1611, "Age-Of-Location-Information", U32, NOT_M),
    a(1612, "Active-APN", GROUPED, NOT_M),
    a(1616, "MPS-Priority", U32, NOT_M),
    a(1619, "Subscribed-Periodic-RAU-TAU-Timer", U32, NOT_M),
    a(1620, "Ext-PDP-Type", OCTETS, NOT_M),
    a(1621, "Ext-PDP-Address", ADDRESS, NOT_M),
];

/// Builds the built-in dictionary from the tables.
pub(super) fn build() -> Dictionary {
    let mut dict = Dictionary::new();
    for &(id, name) in VENDORS {
        dict.insert_vendor(id, name);
    }
    for &(id, name) in APPLICATIONS {
        dict.insert_application(id, name);
    }
    for &(code, name) in COMMANDS {
        dict.insert_command(CommandDef::new(code, name));
    }
    for &(vendor, table) in TABLES {
        let vendor = (vendor != 0).then_some(vendor);
        for entry in table {
            let mut def = AvpDef::new(entry.code, vendor, entry.name, entry.data_type).with_mandatory(entry.mandatory);
            for &(value, name) in entry.values {
                def = def.with_enum(value, name);
            }
            dict.insert_avp(def);
        }
    }
    dict
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::avp::AvpFlags;
    use crate::message::AvpKey;
    use crate::types::AvpType;

    #[test]
    fn no_duplicate_keys_or_names() {
        let mut keys = HashSet::new();
        let mut names = HashSet::new();
        for &(vendor, table) in TABLES {
            let mut vendor_names = HashSet::new();
            for entry in table {
                assert!(keys.insert((entry.code, vendor)), "duplicate key ({}, {vendor})", entry.code);
                assert!(vendor_names.insert(entry.name), "duplicate name {} for vendor {vendor}", entry.name);
                // Names are unique across vendors too, so lookups by name
                // are never ambiguous.
                assert!(names.insert(entry.name), "name {} used by two vendors", entry.name);
                let mut values = HashSet::new();
                for &(value, _) in entry.values {
                    assert!(values.insert(value), "{}: value {value} named twice", entry.name);
                }
            }
        }
        let mut commands = HashSet::new();
        for &(code, name) in COMMANDS {
            assert!(commands.insert(code), "duplicate command {code}");
            assert!(!name.ends_with("-Request") && !name.ends_with("-Answer"), "{name}");
        }
    }

    #[test]
    fn built_dictionary_matches_tables() {
        let dict = build();
        let total: usize = TABLES.iter().map(|(_, t)| t.len()).sum();
        assert_eq!(dict.avp_count(), total);
        assert_eq!(dict.command_count(), COMMANDS.len());
        for &(vendor, table) in TABLES {
            for entry in table {
                let def = dict.avp(entry.code, Some(vendor)).expect(entry.name);
                assert_eq!(def.name(), entry.name);
                assert_eq!(def.vendor_id(), (vendor != 0).then_some(vendor));
                assert_eq!(dict.avp_by_name(entry.name), Some(def));
                // Only integer formats carry named values.
                if !entry.values.is_empty() {
                    assert!(
                        matches!(entry.data_type, DataType::Enumerated | DataType::Unsigned32 | DataType::Integer32),
                        "{}",
                        entry.name
                    );
                }
            }
        }
        assert!(TGPP.len() >= 150, "3GPP table has {} entries", TGPP.len());
    }

    #[test]
    fn spot_checks_against_the_rfcs() {
        let d = build();
        let check = |code: u32, vendor: Option<u32>, name: &str, ty: DataType, m: FlagRule| {
            let def = d.avp(code, vendor).unwrap_or_else(|| panic!("{name} ({code}) missing"));
            assert_eq!((def.name(), def.data_type(), def.mandatory()), (name, ty, m), "AVP {code}");
        };
        let tgpp = Some(VENDOR_3GPP);
        check(1, None, "User-Name", DataType::Utf8String, M);
        check(257, None, "Host-IP-Address", DataType::Address, M);
        check(260, None, "Vendor-Specific-Application-Id", DataType::Grouped, M);
        check(263, None, "Session-Id", DataType::Utf8String, M);
        check(264, None, "Origin-Host", DataType::DiameterIdentity, M);
        check(267, None, "Firmware-Revision", DataType::Unsigned32, NOT_M);
        check(268, None, "Result-Code", DataType::Unsigned32, M);
        check(269, None, "Product-Name", DataType::Utf8String, NOT_M);
        check(281, None, "Error-Message", DataType::Utf8String, NOT_M);
        check(287, None, "Accounting-Sub-Session-Id", DataType::Unsigned64, M);
        check(291, None, "Authorization-Lifetime", DataType::Unsigned32, M);
        check(292, None, "Redirect-Host", DataType::DiameterUri, M);
        check(294, None, "Error-Reporting-Host", DataType::DiameterIdentity, NOT_M);
        check(296, None, "Origin-Realm", DataType::DiameterIdentity, M);
        check(55, None, "Event-Timestamp", DataType::Time, M);
        check(411, None, "CC-Correlation-Id", DataType::OctetString, MAY_M);
        check(416, None, "CC-Request-Type", DataType::Enumerated, M);
        check(429, None, "Exponent", DataType::Integer32, M);
        check(438, None, "Restriction-Filter-Rule", DataType::IpFilterRule, M);
        check(447, None, "Value-Digits", DataType::Integer64, M);
        check(451, None, "Tariff-Time-Change", DataType::Time, M);
        check(458, None, "User-Equipment-Info", DataType::Grouped, MAY_M);
        check(493, None, "Service-Selection", DataType::Utf8String, M);
        check(628, tgpp, "Supported-Features", DataType::Grouped, NOT_M);
        check(1032, tgpp, "RAT-Type", DataType::Enumerated, NOT_M);
        check(1405, tgpp, "ULR-Flags", DataType::Unsigned32, M);
        check(1447, tgpp, "RAND", DataType::OctetString, M);

        let named = |name: &str, value: i64| d.avp_by_name(name).and_then(|def| def.enum_name(value));
        assert_eq!(named("Result-Code", 2001), Some("DIAMETER_SUCCESS"));
        assert_eq!(named("Result-Code", 5012), Some("DIAMETER_UNABLE_TO_COMPLY"));
        assert_eq!(named("Result-Code", 4012), Some("DIAMETER_CREDIT_LIMIT_REACHED"));
        assert_eq!(named("Experimental-Result-Code", 5001), Some("DIAMETER_ERROR_USER_UNKNOWN"));
        assert_eq!(named("Experimental-Result-Code", 5420), Some("DIAMETER_ERROR_UNKNOWN_EPS_SUBSCRIPTION"));
        assert_eq!(named("Disconnect-Cause", 2), Some("DO_NOT_WANT_TO_TALK_TO_YOU"));
        assert_eq!(named("Auth-Session-State", 1), Some("NO_STATE_MAINTAINED"));
        assert_eq!(named("CC-Request-Type", 1), Some("INITIAL_REQUEST"));
        assert_eq!(named("CC-Request-Type", 4), Some("EVENT_REQUEST"));
        assert_eq!(named("Subscription-Id-Type", 1), Some("END_USER_IMSI"));
        assert_eq!(named("Termination-Cause", 1), Some("DIAMETER_LOGOUT"));
        assert_eq!(named("RAT-Type", 1004), Some("EUTRAN"));
        assert_eq!(named("Inband-Security-Id", 1), Some("TLS"));
        assert_eq!(d.avp_by_name("Accounting-Record-Type").and_then(|a| a.enum_value("STOP_RECORD")), Some(4));

        for (code, name) in [
            (257, "Capabilities-Exchange"),
            (258, "Re-Auth"),
            (271, "Accounting"),
            (272, "Credit-Control"),
            (274, "Abort-Session"),
            (275, "Session-Termination"),
            (280, "Device-Watchdog"),
            (282, "Disconnect-Peer"),
            (316, "Update-Location"),
            (318, "Authentication-Information"),
            (324, "ME-Identity-Check"),
        ] {
            assert_eq!(d.command(code).map(CommandDef::name), Some(name));
            assert_eq!(d.command_by_name(name).map(CommandDef::code), Some(code));
        }
        assert_eq!(d.application(4), Some("Diameter Credit-Control"));
        assert_eq!(d.application(16_777_251), Some("3GPP S6a/S6d"));
        assert_eq!(d.application(0xffff_ffff), Some("Relay"));
        assert_eq!(d.vendor(10_415), Some("3GPP"));
        assert_eq!(d.vendor(13_019), Some("ETSI"));
        assert_eq!(d.vendor(5_535), Some("3GPP2"));
    }

    #[test]
    fn lookups_are_hash_maps() {
        // Lookups by (code, vendor), by name and by command go through hash
        // maps, so they are O(1) whatever the dictionary's size.
        let d = build();
        let by_key = &d.by_key;
        let by_name: &std::collections::HashMap<Box<str>, usize> = &d.by_name;
        let commands: &std::collections::HashMap<u32, CommandDef> = &d.commands;
        assert_eq!(by_key.len(), d.avp_count());
        assert_eq!(by_name.len(), d.avp_count());
        assert_eq!(commands.len(), COMMANDS.len());
    }

    /// Compares one typed key of `crate::avps` with the built-in table.
    fn key_agrees<T: AvpType>(d: &Dictionary, name: &str, key: AvpKey<T>) {
        let def = d.avp(key.code(), key.vendor_id()).unwrap_or_else(|| panic!("{name} ({}) not built in", key.code()));
        assert_eq!(def.vendor_id(), key.vendor_id(), "{name}");
        assert_eq!(def.data_type(), T::DATA_TYPE, "{name}: data type");
        let m_set = key.flags().bits() & AvpFlags::MANDATORY != 0;
        assert_eq!(m_set, def.mandatory() == FlagRule::Must, "{name}: M flag");
        // Keys are named after the AVP: ORIGIN_HOST is Origin-Host.
        assert_eq!(def.name().replace('-', "_").to_ascii_uppercase(), name, "{name}: AVP name");
    }

    #[test]
    fn typed_keys_agree_with_the_table() {
        use crate::avps::*;
        let d = build();
        macro_rules! agree {
            ($($key:ident),* $(,)?) => {{
                $( key_agrees(&d, stringify!($key), $key); )*
                [$(stringify!($key)),*].len()
            }};
        }
        let checked = agree!(
            USER_NAME,
            CLASS,
            SESSION_TIMEOUT,
            PROXY_STATE,
            ACCT_SESSION_ID,
            ACCT_MULTI_SESSION_ID,
            EVENT_TIMESTAMP,
            ACCT_INTERIM_INTERVAL,
            HOST_IP_ADDRESS,
            AUTH_APPLICATION_ID,
            ACCT_APPLICATION_ID,
            VENDOR_SPECIFIC_APPLICATION_ID,
            REDIRECT_HOST_USAGE,
            REDIRECT_MAX_CACHE_TIME,
            SESSION_ID,
            ORIGIN_HOST,
            SUPPORTED_VENDOR_ID,
            VENDOR_ID,
            FIRMWARE_REVISION,
            RESULT_CODE,
            PRODUCT_NAME,
            SESSION_BINDING,
            SESSION_SERVER_FAILOVER,
            MULTI_ROUND_TIME_OUT,
            DISCONNECT_CAUSE,
            AUTH_REQUEST_TYPE,
            AUTH_GRACE_PERIOD,
            AUTH_SESSION_STATE,
            ORIGIN_STATE_ID,
            FAILED_AVP,
            PROXY_HOST,
            ERROR_MESSAGE,
            ROUTE_RECORD,
            DESTINATION_REALM,
            PROXY_INFO,
            RE_AUTH_REQUEST_TYPE,
            ACCOUNTING_SUB_SESSION_ID,
            AUTHORIZATION_LIFETIME,
            REDIRECT_HOST,
            DESTINATION_HOST,
            ERROR_REPORTING_HOST,
            TERMINATION_CAUSE,
            ORIGIN_REALM,
            EXPERIMENTAL_RESULT,
            EXPERIMENTAL_RESULT_CODE,
            INBAND_SECURITY_ID,
            ACCOUNTING_RECORD_TYPE,
            ACCOUNTING_REALTIME_REQUIRED,
            ACCOUNTING_RECORD_NUMBER,
            CC_CORRELATION_ID,
            CC_INPUT_OCTETS,
            CC_OUTPUT_OCTETS,
            CC_REQUEST_NUMBER,
            CC_REQUEST_TYPE,
            CC_TIME,
            CC_TOTAL_OCTETS,
            GRANTED_SERVICE_UNIT,
            RATING_GROUP,
            REQUESTED_ACTION,
            REQUESTED_SERVICE_UNIT,
            SERVICE_IDENTIFIER,
            SUBSCRIPTION_ID,
            SUBSCRIPTION_ID_DATA,
            USED_SERVICE_UNIT,
            VALIDITY_TIME,
            SUBSCRIPTION_ID_TYPE,
            MULTIPLE_SERVICES_INDICATOR,
            MULTIPLE_SERVICES_CREDIT_CONTROL,
            SERVICE_CONTEXT_ID,
        );
        assert!(checked >= 69);
        // RFC 6733 §8.9 defines Authorization-Lifetime as Unsigned32.
        assert_eq!(d.avp(291, None).map(AvpDef::data_type), Some(DataType::Unsigned32));
    }
}
