//! Well-known codes: commands, applications, vendors, result codes and
//! typed AVP keys for the base protocol (RFC 6733) and Credit-Control
//! (RFC 4006).

/// Command codes (RFC 6733 §3.1, RFC 4006 §3).
pub mod commands {
    /// Capabilities-Exchange-Request/Answer.
    pub const CAPABILITIES_EXCHANGE: u32 = 257;
    /// Re-Auth-Request/Answer.
    pub const RE_AUTH: u32 = 258;
    /// Accounting-Request/Answer.
    pub const ACCOUNTING: u32 = 271;
    /// Credit-Control-Request/Answer (RFC 4006).
    pub const CREDIT_CONTROL: u32 = 272;
    /// Abort-Session-Request/Answer.
    pub const ABORT_SESSION: u32 = 274;
    /// Session-Termination-Request/Answer.
    pub const SESSION_TERMINATION: u32 = 275;
    /// Device-Watchdog-Request/Answer.
    pub const DEVICE_WATCHDOG: u32 = 280;
    /// Disconnect-Peer-Request/Answer.
    pub const DISCONNECT_PEER: u32 = 282;
}

/// Application identifiers (RFC 6733 §2.4, §11.3).
pub mod apps {
    /// Diameter common messages (CER, DWR, DPR and their answers).
    pub const COMMON: u32 = 0;
    /// NASREQ (RFC 7155).
    pub const NASREQ: u32 = 1;
    /// Base accounting.
    pub const BASE_ACCOUNTING: u32 = 3;
    /// Credit-Control (RFC 4006).
    pub const CREDIT_CONTROL: u32 = 4;
    /// 3GPP Gx.
    pub const TGPP_GX: u32 = 16_777_238;
    /// 3GPP S6a/S6d.
    pub const TGPP_S6A: u32 = 16_777_251;
    /// 3GPP S13/S13' (equipment identity check).
    pub const TGPP_S13: u32 = 16_777_252;
    /// Relay: advertises that every application is accepted (RFC 6733 §2.4).
    pub const RELAY: u32 = 0xffff_ffff;
}

/// IANA enterprise numbers used as Vendor-Id.
pub mod vendors {
    /// 3GPP.
    pub const TGPP: u32 = 10_415;
    /// ETSI.
    pub const ETSI: u32 = 13_019;
}

/// Result-Code values (RFC 6733 §7.1).
pub mod result_codes {
    /// 1001: more rounds are needed.
    pub const DIAMETER_MULTI_ROUND_AUTH: u32 = 1001;
    /// 2001: success.
    pub const DIAMETER_SUCCESS: u32 = 2001;
    /// 2002: limited success.
    pub const DIAMETER_LIMITED_SUCCESS: u32 = 2002;
    /// 3001: the command is not supported.
    pub const DIAMETER_COMMAND_UNSUPPORTED: u32 = 3001;
    /// 3002: the request could not be delivered.
    pub const DIAMETER_UNABLE_TO_DELIVER: u32 = 3002;
    /// 3003: the realm is not served.
    pub const DIAMETER_REALM_NOT_SERVED: u32 = 3003;
    /// 3004: too busy.
    pub const DIAMETER_TOO_BUSY: u32 = 3004;
    /// 3005: a routing loop was detected.
    pub const DIAMETER_LOOP_DETECTED: u32 = 3005;
    /// 3006: redirect indication.
    pub const DIAMETER_REDIRECT_INDICATION: u32 = 3006;
    /// 3007: the application is not supported.
    pub const DIAMETER_APPLICATION_UNSUPPORTED: u32 = 3007;
    /// 3008: invalid header bits.
    pub const DIAMETER_INVALID_HDR_BITS: u32 = 3008;
    /// 3009: invalid AVP bits.
    pub const DIAMETER_INVALID_AVP_BITS: u32 = 3009;
    /// 3010: the peer is unknown.
    pub const DIAMETER_UNKNOWN_PEER: u32 = 3010;
    /// 4001: authentication rejected.
    pub const DIAMETER_AUTHENTICATION_REJECTED: u32 = 4001;
    /// 4002: out of space.
    pub const DIAMETER_OUT_OF_SPACE: u32 = 4002;
    /// 4003: election lost.
    pub const ELECTION_LOST: u32 = 4003;
    /// 5001: an AVP is not supported.
    pub const DIAMETER_AVP_UNSUPPORTED: u32 = 5001;
    /// 5002: unknown session.
    pub const DIAMETER_UNKNOWN_SESSION_ID: u32 = 5002;
    /// 5003: authorization rejected.
    pub const DIAMETER_AUTHORIZATION_REJECTED: u32 = 5003;
    /// 5004: an AVP has an invalid value.
    pub const DIAMETER_INVALID_AVP_VALUE: u32 = 5004;
    /// 5005: a required AVP is missing.
    pub const DIAMETER_MISSING_AVP: u32 = 5005;
    /// 5006: resources exceeded.
    pub const DIAMETER_RESOURCES_EXCEEDED: u32 = 5006;
    /// 5007: contradicting AVPs.
    pub const DIAMETER_CONTRADICTING_AVPS: u32 = 5007;
    /// 5008: an AVP is not allowed.
    pub const DIAMETER_AVP_NOT_ALLOWED: u32 = 5008;
    /// 5009: an AVP occurs too many times.
    pub const DIAMETER_AVP_OCCURS_TOO_MANY_TIMES: u32 = 5009;
    /// 5010: no application in common (CER/CEA).
    pub const DIAMETER_NO_COMMON_APPLICATION: u32 = 5010;
    /// 5011: unsupported version.
    pub const DIAMETER_UNSUPPORTED_VERSION: u32 = 5011;
    /// 5012: unable to comply.
    pub const DIAMETER_UNABLE_TO_COMPLY: u32 = 5012;
    /// 5013: invalid bit in header.
    pub const DIAMETER_INVALID_BIT_IN_HEADER: u32 = 5013;
    /// 5014: invalid AVP length.
    pub const DIAMETER_INVALID_AVP_LENGTH: u32 = 5014;
    /// 5015: invalid message length.
    pub const DIAMETER_INVALID_MESSAGE_LENGTH: u32 = 5015;
    /// 5016: invalid AVP bit combination.
    pub const DIAMETER_INVALID_AVP_BIT_COMBO: u32 = 5016;
    /// 5017: no common security mechanism.
    pub const DIAMETER_NO_COMMON_SECURITY: u32 = 5017;

    /// The class of a Result-Code (RFC 6733 §7.1): 1 informational,
    /// 2 success, 3 protocol error, 4 transient failure, 5 permanent failure.
    pub const fn class(code: u32) -> u32 {
        code / 1000
    }
}

/// Disconnect-Cause values (RFC 6733 §5.4.3).
pub mod disconnect_cause {
    /// The peer is going to reboot.
    pub const REBOOTING: i32 = 0;
    /// The peer is busy; do not reconnect soon.
    pub const BUSY: i32 = 1;
    /// The peer does not want to talk to us; do not reconnect soon.
    pub const DO_NOT_WANT_TO_TALK_TO_YOU: i32 = 2;
}

/// Typed keys for base protocol (RFC 6733 §4.5) and Credit-Control
/// (RFC 4006 §8) AVPs, with the M flag as those RFCs require.
pub mod avps {
    use crate::message::AvpKey;
    use crate::types::*;

    macro_rules! keys {
        ($($(#[$m:meta])* $name:ident: $ty:ty = $code:literal $(, $flag:ident)?;)*) => {
            $( $(#[$m])* pub const $name: AvpKey<$ty> = AvpKey::new($code) $(.$flag())?; )*
        };
    }

    keys! {
        /// User-Name (1).
        USER_NAME: Utf8String = 1, mandatory;
        /// Class (25).
        CLASS: OctetString = 25, mandatory;
        /// Session-Timeout (27).
        SESSION_TIMEOUT: Unsigned32 = 27, mandatory;
        /// Proxy-State (33).
        PROXY_STATE: OctetString = 33, mandatory;
        /// Acct-Session-Id (44).
        ACCT_SESSION_ID: OctetString = 44, mandatory;
        /// Acct-Multi-Session-Id (50).
        ACCT_MULTI_SESSION_ID: Utf8String = 50, mandatory;
        /// Event-Timestamp (55).
        EVENT_TIMESTAMP: Time = 55, mandatory;
        /// Acct-Interim-Interval (85).
        ACCT_INTERIM_INTERVAL: Unsigned32 = 85, mandatory;
        /// Host-IP-Address (257).
        HOST_IP_ADDRESS: Address = 257, mandatory;
        /// Auth-Application-Id (258).
        AUTH_APPLICATION_ID: Unsigned32 = 258, mandatory;
        /// Acct-Application-Id (259).
        ACCT_APPLICATION_ID: Unsigned32 = 259, mandatory;
        /// Vendor-Specific-Application-Id (260).
        VENDOR_SPECIFIC_APPLICATION_ID: Grouped = 260, mandatory;
        /// Redirect-Host-Usage (261).
        REDIRECT_HOST_USAGE: Enumerated = 261, mandatory;
        /// Redirect-Max-Cache-Time (262).
        REDIRECT_MAX_CACHE_TIME: Unsigned32 = 262, mandatory;
        /// Session-Id (263).
        SESSION_ID: Utf8String = 263, mandatory;
        /// Origin-Host (264).
        ORIGIN_HOST: DiameterIdentity = 264, mandatory;
        /// Supported-Vendor-Id (265).
        SUPPORTED_VENDOR_ID: Unsigned32 = 265, mandatory;
        /// Vendor-Id (266).
        VENDOR_ID: Unsigned32 = 266, mandatory;
        /// Firmware-Revision (267).
        FIRMWARE_REVISION: Unsigned32 = 267;
        /// Result-Code (268).
        RESULT_CODE: Unsigned32 = 268, mandatory;
        /// Product-Name (269).
        PRODUCT_NAME: Utf8String = 269;
        /// Session-Binding (270).
        SESSION_BINDING: Unsigned32 = 270, mandatory;
        /// Session-Server-Failover (271).
        SESSION_SERVER_FAILOVER: Enumerated = 271, mandatory;
        /// Multi-Round-Time-Out (272).
        MULTI_ROUND_TIME_OUT: Unsigned32 = 272, mandatory;
        /// Disconnect-Cause (273).
        DISCONNECT_CAUSE: Enumerated = 273, mandatory;
        /// Auth-Request-Type (274).
        AUTH_REQUEST_TYPE: Enumerated = 274, mandatory;
        /// Auth-Grace-Period (276).
        AUTH_GRACE_PERIOD: Unsigned32 = 276, mandatory;
        /// Auth-Session-State (277).
        AUTH_SESSION_STATE: Enumerated = 277, mandatory;
        /// Origin-State-Id (278).
        ORIGIN_STATE_ID: Unsigned32 = 278, mandatory;
        /// Failed-AVP (279).
        FAILED_AVP: Grouped = 279, mandatory;
        /// Proxy-Host (280).
        PROXY_HOST: DiameterIdentity = 280, mandatory;
        /// Error-Message (281).
        ERROR_MESSAGE: Utf8String = 281;
        /// Route-Record (282).
        ROUTE_RECORD: DiameterIdentity = 282, mandatory;
        /// Destination-Realm (283).
        DESTINATION_REALM: DiameterIdentity = 283, mandatory;
        /// Proxy-Info (284).
        PROXY_INFO: Grouped = 284, mandatory;
        /// Re-Auth-Request-Type (285).
        RE_AUTH_REQUEST_TYPE: Enumerated = 285, mandatory;
        /// Accounting-Sub-Session-Id (287).
        ACCOUNTING_SUB_SESSION_ID: Unsigned64 = 287, mandatory;
        /// Authorization-Lifetime (291).
        AUTHORIZATION_LIFETIME: Unsigned32 = 291, mandatory;
        /// Redirect-Host (292).
        REDIRECT_HOST: DiameterUri = 292, mandatory;
        /// Destination-Host (293).
        DESTINATION_HOST: DiameterIdentity = 293, mandatory;
        /// Error-Reporting-Host (294).
        ERROR_REPORTING_HOST: DiameterIdentity = 294;
        /// Termination-Cause (295).
        TERMINATION_CAUSE: Enumerated = 295, mandatory;
        /// Origin-Realm (296).
        ORIGIN_REALM: DiameterIdentity = 296, mandatory;
        /// Experimental-Result (297).
        EXPERIMENTAL_RESULT: Grouped = 297, mandatory;
        /// Experimental-Result-Code (298).
        EXPERIMENTAL_RESULT_CODE: Unsigned32 = 298, mandatory;
        /// Inband-Security-Id (299).
        INBAND_SECURITY_ID: Unsigned32 = 299, mandatory;
        /// Accounting-Record-Type (480).
        ACCOUNTING_RECORD_TYPE: Enumerated = 480, mandatory;
        /// Accounting-Realtime-Required (483).
        ACCOUNTING_REALTIME_REQUIRED: Enumerated = 483, mandatory;
        /// Accounting-Record-Number (485).
        ACCOUNTING_RECORD_NUMBER: Unsigned32 = 485, mandatory;

        /// CC-Correlation-Id (411).
        CC_CORRELATION_ID: OctetString = 411;
        /// CC-Input-Octets (412).
        CC_INPUT_OCTETS: Unsigned64 = 412, mandatory;
        /// CC-Output-Octets (414).
        CC_OUTPUT_OCTETS: Unsigned64 = 414, mandatory;
        /// CC-Request-Number (415).
        CC_REQUEST_NUMBER: Unsigned32 = 415, mandatory;
        /// CC-Request-Type (416).
        CC_REQUEST_TYPE: Enumerated = 416, mandatory;
        /// CC-Time (420).
        CC_TIME: Unsigned32 = 420, mandatory;
        /// CC-Total-Octets (421).
        CC_TOTAL_OCTETS: Unsigned64 = 421, mandatory;
        /// Granted-Service-Unit (431).
        GRANTED_SERVICE_UNIT: Grouped = 431, mandatory;
        /// Rating-Group (432).
        RATING_GROUP: Unsigned32 = 432, mandatory;
        /// Requested-Action (436).
        REQUESTED_ACTION: Enumerated = 436, mandatory;
        /// Requested-Service-Unit (437).
        REQUESTED_SERVICE_UNIT: Grouped = 437, mandatory;
        /// Service-Identifier (439).
        SERVICE_IDENTIFIER: Unsigned32 = 439, mandatory;
        /// Subscription-Id (443).
        SUBSCRIPTION_ID: Grouped = 443, mandatory;
        /// Subscription-Id-Data (444).
        SUBSCRIPTION_ID_DATA: Utf8String = 444, mandatory;
        /// Used-Service-Unit (446).
        USED_SERVICE_UNIT: Grouped = 446, mandatory;
        /// Validity-Time (448).
        VALIDITY_TIME: Unsigned32 = 448, mandatory;
        /// Subscription-Id-Type (450).
        SUBSCRIPTION_ID_TYPE: Enumerated = 450, mandatory;
        /// Multiple-Services-Indicator (455).
        MULTIPLE_SERVICES_INDICATOR: Enumerated = 455, mandatory;
        /// Multiple-Services-Credit-Control (456).
        MULTIPLE_SERVICES_CREDIT_CONTROL: Grouped = 456, mandatory;
        /// Service-Context-Id (461).
        SERVICE_CONTEXT_ID: Utf8String = 461, mandatory;
    }
}
