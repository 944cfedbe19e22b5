#!/usr/bin/env python3
"""A python-diameter (PyPI `python-diameter` 0.9.0) client for interop tests.

    python3 interop/python/py_client.py --port PORT --peer-host IDENTITY [OPTIONS]

Connects to 127.0.0.1:PORT with its own CER/CEA (the peer must answer with
Origin-Host IDENTITY: python-diameter routes by the identity it was told),
sends --count Credit-Control-Requests one after another (RFC 4006: INITIAL,
UPDATE..., TERMINATION; a count of 1 sends an EVENT_REQUEST) and prints one
JSON line per answer on stdout:

    {"event":"ready","peer":IDENTITY}
    {"event":"answer","i":0,"result_code":2001,"error_bit":false,
     "origin_host":...,"error_reporting_host":...,"session_id":...,
     "session_id_count":1,"route_record":[...],"end_to_end":...,
     "sent_end_to_end":...,"command_code":272}
    {"event":"done","answers":N,"errors":M}

A request that gets no answer within --timeout-s prints
{"event":"error","i":I,"error":"..."}. Exits 0 when every request was
answered (whatever the Result-Code), 1 otherwise, 2 on bad usage.

Options:
  --origin-host H        default client.py.test
  --origin-realm R       default py.test
  --dest-realm R         Destination-Realm (default: the origin realm)
  --count N              requests to send (default 1)
  --route-record ID      add a Route-Record AVP with ID to every request, as if
                         ID had already relayed it (repeatable)
  --timeout-s S          per-request answer timeout (default 5)
  --max-seconds S        hard lifetime limit (default 60)
"""
import argparse
import json
import logging
import os
import sys
import threading

from diameter.message import Message, constants
from diameter.message.avp import Avp
from diameter.message.commands import CreditControlRequest
from diameter.node import Node
from diameter.node.application import SimpleThreadingApplication


def say(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def text(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def avp_values(msg, code):
    """Every value of the top-level AVP `code` (vendor 0), decoded from the
    wire form so that AVPs outside the command's python grammar count too."""
    raw = Message.from_bytes(msg.as_bytes(), plain_msg=True)
    return [text(a.value) for a in raw.avps if a.code == code and not a.vendor_id]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--peer-host", required=True)
    p.add_argument("--origin-host", default="client.py.test")
    p.add_argument("--origin-realm", default="py.test")
    p.add_argument("--dest-realm")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--route-record", action="append", default=[])
    p.add_argument("--timeout-s", type=float, default=5)
    p.add_argument("--max-seconds", type=float, default=60)
    a = p.parse_args()
    dest_realm = a.dest_realm or a.origin_realm

    # Hard lifetime bound, whatever the node's threads do.
    t = threading.Timer(a.max_seconds, lambda: (sys.stderr.write("py_client: --max-seconds reached\n"), os._exit(3)))
    t.daemon = True
    t.start()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="py_client %(name)s %(levelname)s %(message)s")

    node = Node(a.origin_host, a.origin_realm, vendor_ids=[10415])
    # Timer checks (and stop) at 1 s granularity rather than 6 s.
    node.wakeup_interval = 1
    node.idle_timeout = 30
    peer = node.add_peer(f"aaa://{a.peer_host}:{a.port};transport=tcp", a.origin_realm,
                         ip_addresses=["127.0.0.1"], is_persistent=True)
    app = SimpleThreadingApplication(constants.APP_DIAMETER_CREDIT_CONTROL_APPLICATION,
                                     is_auth_application=True)
    # Routes by Destination-Realm: the relay's realms go to the one peer.
    node.add_application(app, [peer], realms=[dest_realm])
    node.start()
    try:
        app.wait_for_ready(timeout=15)
    except Exception as e:  # ApplicationError
        say({"event": "error", "i": -1, "error": f"no connection: {e}"})
        node.stop(wait_timeout=2, force=True)
        os._exit(1)
    say({"event": "ready", "peer": peer.connection.host_identity if peer.connection else None})

    session_id = node.session_generator.next_id()
    answers = errors = 0
    for i in range(a.count):
        ccr = CreditControlRequest()
        ccr.session_id = session_id
        ccr.origin_host = a.origin_host.encode()
        ccr.origin_realm = a.origin_realm.encode()
        ccr.destination_realm = dest_realm.encode()
        ccr.auth_application_id = constants.APP_DIAMETER_CREDIT_CONTROL_APPLICATION
        ccr.service_context_id = "32251@3gpp.org"
        if a.count == 1:
            ccr.cc_request_type = constants.E_CC_REQUEST_TYPE_EVENT_REQUEST
        elif i == 0:
            ccr.cc_request_type = constants.E_CC_REQUEST_TYPE_INITIAL_REQUEST
        elif i == a.count - 1:
            ccr.cc_request_type = constants.E_CC_REQUEST_TYPE_TERMINATION_REQUEST
        else:
            ccr.cc_request_type = constants.E_CC_REQUEST_TYPE_UPDATE_REQUEST
        ccr.cc_request_number = i
        ccr.user_name = "alice@py.test"
        for rr in a.route_record:
            ccr.route_record.append(rr.encode())
        try:
            ans = app.send_request(ccr, timeout=a.timeout_s)
        except Exception as e:
            errors += 1
            say({"event": "error", "i": i, "error": repr(e)})
            continue
        answers += 1
        rc = avp_values(ans, constants.AVP_RESULT_CODE)
        erh = avp_values(ans, constants.AVP_ERROR_REPORTING_HOST)
        oh = avp_values(ans, constants.AVP_ORIGIN_HOST)
        sid = avp_values(ans, constants.AVP_SESSION_ID)
        say({"event": "answer", "i": i,
             "command_code": ans.header.command_code,
             "end_to_end": ans.header.end_to_end_identifier,
             "sent_end_to_end": ccr.header.end_to_end_identifier,
             "result_code": rc[0] if rc else None,
             "error_bit": bool(ans.header.is_error),
             "origin_host": oh[0] if oh else None,
             "error_reporting_host": erh[0] if erh else None,
             "session_id": sid[0] if sid else None,
             "session_id_count": len(sid),
             "route_record": avp_values(ans, constants.AVP_ROUTE_RECORD)})
    say({"event": "done", "answers": answers, "errors": errors})
    try:
        node.stop(wait_timeout=3)
    except Exception as e:
        sys.stderr.write(f"py_client: stop: {e!r}\n")
    os._exit(0 if errors == 0 else 1)


if __name__ == "__main__":
    main()
