#!/usr/bin/env escript
%% -*- erlang -*-
%%
%% A standalone Erlang/OTP `diameter` peer for interop tests and captures.
%%
%%   escript interop/erlang/interop_peer.escript server PORT [OPTIONS]
%%   escript interop/erlang/interop_peer.escript client PORT N [OPTIONS]
%%
%% server: listens on ADDR:PORT (PORT 0 = ephemeral), advertises the
%%         Credit-Control application (4, dictionary interop_dcca.dia next to
%%         this script) and answers every CCR with a CCA carrying the request's
%%         Session-Id, CC-Request-Type/-Number and Result-Code (default 2001).
%%         Prints "READY <port>" once listening, one "REQUEST ..." line per
%%         request (for a CCR: "REQUEST CCR from=<peer> session=S type=T
%%         number=N origin_host=H dest_realm=R route_record=ID1,ID2|-", the
%%         last three as the request carried them), "PEER_UP/PEER_DOWN <host>" on connection events.  Runs until
%%         SIGTERM, stdin EOF (only with --stdin), or --max-seconds; it then
%%         stops the service, which sends DPR to every connected peer.
%% client: connects to ADDR:PORT, does CER/CEA, prints "READY <port>", sends N
%%         CCRs in one session (INITIAL, UPDATE..., TERMINATION; N=1 sends an
%%         EVENT_REQUEST) printing "ANSWER <i> <result-code>" for each, waits
%%         --linger-ms (default Tw + 1500 ms, so a DWR/DWA pair is exchanged)
%%         printing PEER_UP/PEER_DOWN as they happen (e.g. on the peer's DPR),
%%         then removes the transport, which sends DPR and waits for DPA.
%%         Exits 0 when every answer carried 2001, 1 otherwise.
%%
%% Options:
%%   --addr IP             local and remote address (default 127.0.0.1)
%%   --origin-host H       default server.erl.test / client.erl.test
%%   --origin-realm R      default erl.test
%%   --dest-realm R        client: Destination-Realm (default erl.test)
%%   --dest-host H         client: also send Destination-Host
%%   --tw MS               watchdog timer Tw in ms (default 3000; values under
%%                         the RFC 3539 minimum of 6000 go through OTP's
%%                         {M,F,A} form, which skips the range check)
%%   --result-code N       server: Result-Code of the CCAs (default 2001)
%%   --linger-ms MS        client: wait before disconnecting
%%   --max-seconds S       hard lifetime limit (default 120)
%%   --stdin               also stop on stdin EOF or a "stop" line
%%   --answer-details      client: after each "ANSWER <i> <rc>" line, also print
%%                         "ANSWER_DETAILS <i> origin_host=H error_bit=true|false
%%                         error_reporting_host=H|-" (who answered, e.g. a relay
%%                         in between or the server behind it)
%%
%% TLS options (all three files are needed for TLS; PEM):
%%   --tls-cert F --tls-key F --tls-ca F
%%                         TLS-first (RFC 6733): TLS from the first byte, CER/CEA
%%                         inside TLS.  diameter_tcp transport_config gets
%%                         {ssl_options, true} plus the ssl options
%%                         certfile/keyfile/cacertfile, {verify, verify_peer},
%%                         {versions, ['tlsv1.3','tlsv1.2']} and, on the server,
%%                         {fail_if_no_peer_cert, true}.  The peer's certificate
%%                         must chain to the CA, in both roles.
%%   --inband-tls          with the cert options: RFC 3588 in-band TLS instead.
%%                         The connection starts in clear, the transport
%%                         advertises Inband-Security-Id 1 (TLS) only (its
%%                         capabilities), and diameter_tcp ({ssl_options, Opts})
%%                         runs ssl:connect/ssl:handshake on the socket after
%%                         CER/CEA settled on TLS.  A peer that does not offer 1
%%                         is refused (CEA 5017 / no_common_security).
%%   --tls-versions L      comma-separated, e.g. tlsv1.2 (default tlsv1.3,tlsv1.2)
%%   --tls-sni NAME        client: send SNI NAME and require the server
%%                         certificate to match it (SAN DNS).  "disable": no
%%                         SNI and no hostname check (chain check only).
%%                         Default: no SNI; OTP then checks the certificate
%%                         against the address it connected to (127.0.0.1), so
%%                         the server certificate needs SAN IP:127.0.0.1.
%%                         (Not derived from --dest-host: with a relay in
%%                         between, Destination-Host is not the TLS peer.)
%% With TLS, "TLS_UP <host> protocol=... cipher=... peer_cert=<subject>" follows
%% PEER_UP, and a failed handshake prints "TLS_HANDSHAKE_FAILED <why>" (from
%% OTP's TLS alert reports, or the in-band upgrade failing); an alert on an
%% established connection prints "TLS_ALERT <why>"; a connection that went
%% away before CER/CEA completed prints "TLS_CLOSED_BEFORE_UP <reason>" (a
%% peer that rejects our certificate without an alert, as freeDiameterd
%% does, shows only this).  "TLS_REARM <host>" marks the OTP 25 in-band
%% server race worked around (see rearm/2).  OTP's own NOTICE/ERROR reports
%% still go to stdout as before.
%%
%% Everything is bounded: the client gives up after 15 s without a peer.
-module(interop_peer).
-mode(compile).

-include_lib("diameter/include/diameter.hrl").
-include_lib("public_key/include/public_key.hrl").

-export([main/1]).
%% diameter application callbacks
-export([peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).
%% gen_event callbacks (SIGTERM handler installed in erl_signal_server)
-export([init/1, handle_event/2, handle_call/2, handle_info/2, terminate/2, code_change/3]).
%% watchdog timer callback
-export([tw_value/1]).
%% logger handler (TLS failure lines)
-export([log/2]).

-define(DICT, interop_dcca).
-define(APP_ID, 4).
-define(SVC, interop_peer_svc).

%% ---------------------------------------------------------------------------
%% CLI

main(["server", Port | Rest]) ->
    run(server, list_to_integer(Port), 0, opts(Rest));
main(["client", Port, N | Rest]) ->
    run(client, list_to_integer(Port), list_to_integer(N), opts(Rest));
main(_) ->
    io:format(standard_error,
              "usage: interop_peer.escript server PORT [OPTIONS]~n"
              "       interop_peer.escript client PORT N [OPTIONS]~n", []),
    halt(2).

opts(Args) -> opts(Args, #{}).

opts([], M) -> M;
opts(["--addr", V | T], M) -> opts(T, M#{addr => parse_addr(V)});
opts(["--origin-host", V | T], M) -> opts(T, M#{origin_host => V});
opts(["--origin-realm", V | T], M) -> opts(T, M#{origin_realm => V});
opts(["--dest-realm", V | T], M) -> opts(T, M#{dest_realm => V});
opts(["--dest-host", V | T], M) -> opts(T, M#{dest_host => V});
opts(["--tw", V | T], M) -> opts(T, M#{tw => list_to_integer(V)});
opts(["--result-code", V | T], M) -> opts(T, M#{result_code => list_to_integer(V)});
opts(["--linger-ms", V | T], M) -> opts(T, M#{linger_ms => list_to_integer(V)});
opts(["--max-seconds", V | T], M) -> opts(T, M#{max_seconds => list_to_integer(V)});
opts(["--stdin" | T], M) -> opts(T, M#{stdin => true});
opts(["--answer-details" | T], M) -> opts(T, M#{answer_details => true});
opts(["--tls-cert", V | T], M) -> opts(T, M#{tls_cert => V});
opts(["--tls-key", V | T], M) -> opts(T, M#{tls_key => V});
opts(["--tls-ca", V | T], M) -> opts(T, M#{tls_ca => V});
opts(["--inband-tls" | T], M) -> opts(T, M#{inband_tls => true});
opts(["--tls-versions", V | T], M) ->
    opts(T, M#{tls_versions => [list_to_atom(X) || X <- string:lexemes(V, ",")]});
opts(["--tls-sni", V | T], M) -> opts(T, M#{tls_sni => V});
opts([Bad | _], _) ->
    io:format(standard_error, "interop_peer: bad option ~s~n", [Bad]),
    halt(2).

parse_addr(S) ->
    case inet:parse_address(S) of
        {ok, A} -> A;
        _ -> io:format(standard_error, "interop_peer: bad address ~s~n", [S]), halt(2)
    end.

%% ---------------------------------------------------------------------------
%% Common setup

run(Role, Port, N, O0) ->
    Defaults = #{addr => {127, 0, 0, 1},
                 origin_host => atom_to_list(Role) ++ ".erl.test",
                 origin_realm => "erl.test",
                 dest_realm => "erl.test",
                 tw => 3000,
                 result_code => 2001,
                 max_seconds => 120,
                 stdin => false},
    O = maps:merge(Defaults, O0),
    check_tls_opts(O),
    persistent_term:put(?MODULE, O),
    Self = self(),
    %% Hard lifetime bound, whatever happens below.
    spawn(fun() ->
                  timer:sleep(maps:get(max_seconds, O) * 1000),
                  io:format(standard_error, "interop_peer: --max-seconds reached~n", []),
                  Self ! lifetime_exceeded,
                  timer:sleep(7000),
                  halt(3)
          end),
    install_sigterm(),
    tls_mode(O) == none orelse install_tls_logger(),
    load_dict(),
    ok = diameter:start(),
    tls_mode(O) == none orelse ({ok, _} = application:ensure_all_started(ssl)),
    OSI = erlang:system_time(second) band 16#7fffffff,
    SvcOpts = [{'Origin-Host', maps:get(origin_host, O)},
               {'Origin-Realm', maps:get(origin_realm, O)},
               {'Vendor-Id', 0},
               {'Product-Name', "interop_peer"},
               {'Firmware-Revision', 1},
               {'Origin-State-Id', OSI},
               {'Supported-Vendor-Id', [10415, 193]},
               {'Auth-Application-Id', [?APP_ID]},
               {string_decode, false},
               {decode_format, map},
               {application, [{alias, dcca},
                              {dictionary, ?DICT},
                              {module, ?MODULE}]}],
    ok = diameter:start_service(?SVC, SvcOpts),
    true = diameter:subscribe(?SVC),
    case maps:get(stdin, O) of
        true -> spawn(fun() -> stdin_watch(Self) end);
        false -> ok
    end,
    case Role of
        server -> server(Port, O);
        client -> client(Port, N, O)
    end.

load_dict() ->
    Dia = filename:join(filename:dirname(filename:absname(escript:script_name())),
                        "interop_dcca.dia"),
    Base = case os:getenv("TMPDIR") of
               false -> "/tmp";
               "" -> "/tmp";
               T -> T
           end,
    Tmp = filename:join(Base, "interop_dcca." ++ os:getpid()),
    ok = filelib:ensure_dir(filename:join(Tmp, "x")),
    try
        %% diameter_make:codec/2 is what the diameterc script runs.
        ok = diameter_make:codec(Dia, [{outdir, Tmp}]),
        Erl = filename:join(Tmp, atom_to_list(?DICT) ++ ".erl"),
        {ok, ?DICT, Bin} = compile:file(Erl, [binary, return_errors, {i, Tmp}]),
        {module, ?DICT} = code:load_binary(?DICT, Erl, Bin)
    after
        file:del_dir_r(Tmp)
    end.

stdin_watch(Pid) ->
    case io:get_line(standard_io, "") of
        eof -> Pid ! stop_requested;
        {error, _} -> Pid ! stop_requested;
        "stop" ++ _ -> Pid ! stop_requested;
        _ -> stdin_watch(Pid)
    end.

install_sigterm() ->
    %% Replace the default handler (which calls init:stop/0) so that SIGTERM
    %% stops the service gracefully, with DPR/DPA.
    Self = self(),
    ok = gen_event:add_handler(erl_signal_server, ?MODULE, Self),
    _ = gen_event:delete_handler(erl_signal_server, erl_signal_handler, []),
    ok.

%% OTP only accepts integer watchdog timers >= 6000 ms (RFC 3539); shorter
%% ones, which tests want, go through the {M,F,A} form.
watchdog(Tw) when Tw >= 6000 -> Tw;
watchdog(Tw) -> {?MODULE, tw_value, [Tw]}.

tw_value(Tw) -> Tw.

say(Fmt, Args) ->
    io:format(standard_io, Fmt ++ "~n", Args).

%% ---------------------------------------------------------------------------
%% Server

server(Port, O) ->
    Addr = maps:get(addr, O),
    Tw = maps:get(tw, O),
    {ok, Ref} = diameter:add_transport(?SVC, {listen, [{transport_module, diameter_tcp},
                                                       {transport_config, tls_config(server, O)
                                                                          ++ [{reuseaddr, true},
                                                                              {ip, Addr},
                                                                              {port, Port}]},
                                                       {watchdog_timer, watchdog(Tw)}
                                                       | tls_caps(O)]}),
    LPort = listen_port(Ref, 200),
    say("READY ~b", [LPort]),
    Why = event_loop(),
    say("STOPPING ~p", [Why]),
    stop_all(),
    halt(0).

listen_port(_Ref, 0) ->
    io:format(standard_error, "interop_peer: listener did not come up~n", []),
    halt(1);
listen_port(Ref, Tries) ->
    case [S || {{diameter_tcp, listener, {R, {_, S}}}, _} <- diameter_reg:match({diameter_tcp, listener, {'_', '_'}}),
               R == Ref] of
        [S | _] ->
            {ok, P} = case S of
                          {sslsocket, _, _} -> ssl_port(S); % TLS-first: ssl listen socket
                          _ -> inet:port(S)
                      end,
            P;
        [] ->
            timer:sleep(25),
            listen_port(Ref, Tries - 1)
    end.

%% Waits for a stop reason, printing connection events meanwhile.
event_loop() ->
    receive
        #diameter_event{service = ?SVC, info = Info} ->
            print_event(Info),
            event_loop();
        {tls_log, Line} ->
            say("~s", [Line]),
            event_loop();
        sigterm -> sigterm;
        stop_requested -> stdin;
        lifetime_exceeded -> max_seconds
    end.

print_event(Info) when is_tuple(Info) ->
    case element(1, Info) of
        up ->
            say("PEER_UP ~s", [peer_host(Info)]),
            print_tls(peer_host(Info));
        down -> say("PEER_DOWN ~s", [peer_host(Info)]);
        _ -> print_closed(Info)
    end;
print_event(_) ->
    ok.

peer_host(Info) ->
    try
        {_PeerRef, #diameter_caps{origin_host = {_, H}}} = element(3, Info),
        H
    catch
        _:_ -> "?"
    end.

stop_all() ->
    %% Removing the transports terminates each connection with DPR and waits
    %% (dpr_timeout, 5 s by default) for the DPA.
    _ = diameter:remove_transport(?SVC, true),
    _ = diameter:stop_service(?SVC),
    ok.

%% ---------------------------------------------------------------------------
%% Client

client(Port, N, O) ->
    Addr = maps:get(addr, O),
    Tw = maps:get(tw, O),
    {ok, Ref} = diameter:add_transport(?SVC, {connect, [{transport_module, diameter_tcp},
                                                        {transport_config, tls_config(client, O)
                                                                           ++ [{reuseaddr, true},
                                                                               {ip, Addr},
                                                                               {raddr, Addr},
                                                                               {rport, Port}]},
                                                        {connect_timer, 1000},
                                                        {watchdog_timer, watchdog(Tw)}
                                                        | tls_caps(O)]}),
    wait_up(15000),
    say("READY ~b", [Port]),
    SId = diameter:session_id(maps:get(origin_host, O)),
    Results = [send_ccr(SId, I, N, O) || I <- lists:seq(0, N - 1)],
    Linger = maps:get(linger_ms, O, Tw + 1500),
    Up = linger(erlang:monotonic_time(millisecond) + Linger, true),
    ok = diameter:remove_transport(?SVC, Ref),
    case Up of
        true -> wait_down(8000);
        false -> ok
    end,
    _ = diameter:stop_service(?SVC),
    say("DONE", []),
    case lists:all(fun(R) -> R == 2001 end, Results) of
        true -> halt(0);
        false -> halt(1)
    end.

%% Waits until Deadline (or a stop request), printing connection events as
%% they come (so a PEER_DOWN caused by the peer's DPR shows at once); returns
%% whether the connection is up at the end.
linger(Deadline, Up) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {tls_log, Line} ->
            say("~s", [Line]),
            linger(Deadline, Up);
        #diameter_event{service = ?SVC, info = Info} ->
            print_event(Info),
            linger(Deadline, case event_kind(Info) of
                                 up -> true;
                                 down -> false;
                                 _ -> Up
                             end);
        sigterm -> Up;
        stop_requested -> Up;
        lifetime_exceeded -> Up
    after Left -> Up
    end.

event_kind(Info) when is_tuple(Info) -> element(1, Info);
event_kind(Info) -> Info.

wait_up(Ms) ->
    wait_event(up, erlang:monotonic_time(millisecond) + Ms, fun() ->
        io:format(standard_error, "interop_peer: no connection to the peer~n", []),
        halt(1)
    end).

wait_down(Ms) ->
    wait_event(down, erlang:monotonic_time(millisecond) + Ms, fun() -> ok end).

%% Waits for a service event of the given kind until Deadline (other events,
%% such as connection retries, do not extend the wait).
wait_event(Kind, Deadline, OnTimeout) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        #diameter_event{service = ?SVC, info = Info} when element(1, Info) == Kind ->
            print_event(Info);
        #diameter_event{service = ?SVC, info = Info} ->
            print_closed(Info),
            wait_event(Kind, Deadline, OnTimeout);
        {tls_log, Line} ->
            say("~s", [Line]),
            wait_event(Kind, Deadline, OnTimeout);
        sigterm when Kind == up -> halt(1);
        lifetime_exceeded when Kind == up -> halt(1)
    after Left ->
        OnTimeout()
    end.

req_type(0, 1) -> 4;
req_type(0, _) -> 1;
req_type(I, N) when I == N - 1 -> 3;
req_type(_, _) -> 2.

send_ccr(SId, I, N, O) ->
    #{origin_host := OH, origin_realm := OR, dest_realm := DR} = O,
    DH = case maps:find(dest_host, O) of
             {ok, H} -> [H];
             error -> []
         end,
    Ccr = #{'Session-Id' => SId,
            'Origin-Host' => OH,
            'Origin-Realm' => OR,
            'Destination-Realm' => DR,
            'Destination-Host' => DH,
            'Auth-Application-Id' => ?APP_ID,
            'Service-Context-Id' => "32251@3gpp.org",
            'CC-Request-Type' => req_type(I, N),
            'CC-Request-Number' => I,
            'User-Name' => ["alice@erl.test"],
            'Event-Timestamp' => [{{2024, 1, 2}, {3, 4, 5}}],
            'Subscription-Id' => [[{'Subscription-Id-Type', 1},
                                   {'Subscription-Id-Data', "001010123456789"}],
                                  [{'Subscription-Id-Type', 0},
                                   {'Subscription-Id-Data', "15551234567"}]],
            'Multiple-Services-Indicator' => [1],
            'Multiple-Services-Credit-Control' =>
                [[{'Requested-Service-Unit',
                   [[{'CC-Money', [[{'Unit-Value', [{'Value-Digits', -12345678901},
                                                    {'Exponent', [-2]}]},
                                    {'Currency-Code', [978]}]]},
                     {'CC-Total-Octets', [1 bsl 40]}]]},
                  {'Used-Service-Unit', [[{'CC-Time', [60 * I]},
                                          {'CC-Input-Octets', [123456789012 + I]},
                                          {'CC-Output-Octets', [42]}]]},
                  {'Service-Identifier', [1]},
                  {'Rating-Group', [100]}]],
            'User-Equipment-Info' => [[{'User-Equipment-Info-Type', 0},
                                       {'User-Equipment-Info-Value', <<"3534560789012345">>}]],
            'Service-Information' =>
                [[{'PS-Information', [[{'SGSN-Address', [{0, 0, 0, 0, 0, 0, 0, 1}]},
                                       {'TGPP-IMSI-MCC-MNC', ["00101"]},
                                       {'Called-Station-Id', ["internet"]},
                                       {'TGPP-User-Location-Info',
                                        [<<16#82, 16#00, 16#f1, 16#10, 16#00, 16#01, 16#00, 16#f1,
                                           16#10, 16#00, 16#00, 16#00, 16#01>>]},
                                       {'TGPP-RAT-Type', [<<6>>]}]]}]],
            'Max-PLR-DL' => [0.25],
            'Cost' => [1.5],
            %% An AVP no dictionary knows (vendor 99999 is unassigned here).
            'AVP' => [#diameter_avp{code = 7777, vendor_id = 99999, is_mandatory = false,
                                    data = <<16#de, 16#ad, 16#be, 16#ef, 16#01>>}]},
    case diameter:call(?SVC, dcca, ['CCR' | Ccr], [{timeout, 5000}]) of
        {details, [_Name | Ans], IsError} when is_map(Ans) ->
            RC = result_code(Ans),
            say("ANSWER ~b ~p", [I, RC]),
            say("ANSWER_DETAILS ~b origin_host=~s error_bit=~p error_reporting_host=~s",
                [I, avp_text(maps:get('Origin-Host', Ans, undefined)), IsError,
                 avp_text(maps:get('Error-Reporting-Host', Ans, undefined))]),
            RC;
        [_Name | Ans] when is_map(Ans) ->
            RC = result_code(Ans),
            say("ANSWER ~b ~p", [I, RC]),
            RC;
        Other ->
            say("ERROR ~b ~0p", [I, Other]),
            error
    end.

%% An AVP value as text: "-" when absent, the first of a list.
avp_text(undefined) -> "-";
avp_text([]) -> "-";
avp_text([V | _]) when not is_integer(V) -> avp_text(V);
avp_text(V) when is_binary(V) -> binary_to_list(V);
avp_text(V) -> lists:flatten(io_lib:format("~0p", [V])).

result_code(#{'Result-Code' := [RC]}) -> RC;
result_code(#{'Result-Code' := RC}) when is_integer(RC) -> RC;
result_code(#{'Experimental-Result' := [ER | _]}) ->
    case ER of
        #{'Experimental-Result-Code' := C} -> C;
        _ -> experimental
    end;
result_code(_) -> none.

%% ---------------------------------------------------------------------------
%% TLS

tls_mode(#{tls_cert := _, tls_key := _, tls_ca := _} = O) ->
    case maps:get(inband_tls, O, false) of
        true -> inband;
        false -> first
    end;
tls_mode(_) -> none.

check_tls_opts(O) ->
    Given = [K || K <- [tls_cert, tls_key, tls_ca, inband_tls, tls_versions, tls_sni],
                  maps:is_key(K, O)],
    case {tls_mode(O), Given} of
        {none, [_ | _]} ->
            io:format(standard_error,
                      "interop_peer: TLS needs --tls-cert, --tls-key and --tls-ca~n", []),
            halt(2);
        _ ->
            [begin
                 io:format(standard_error, "interop_peer: ~s: no such file~n", [F]),
                 halt(2)
             end || K <- [tls_cert, tls_key, tls_ca], F <- [maps:get(K, O, "")],
                    maps:is_key(K, O), not filelib:is_regular(F)],
            ok
    end.

%% The ssl options for ssl:listen/connect (TLS-first) or for the in-band
%% ssl:handshake/connect on the accepted/connected socket.
ssl_opts(Role, O) ->
    #{tls_cert := C, tls_key := K, tls_ca := CA} = O,
    [{certfile, C},
     {keyfile, K},
     {cacertfile, CA},
     {verify, verify_peer},
     {versions, maps:get(tls_versions, O, ['tlsv1.3', 'tlsv1.2'])}]
        ++ case Role of
               server -> [{fail_if_no_peer_cert, true}];
               client ->
                   case maps:find(tls_sni, O) of
                       {ok, "disable"} -> [{server_name_indication, disable}];
                       {ok, Name} -> [{server_name_indication, Name}];
                       error -> []
                   end
           end.

%% diameter_tcp transport_config: {ssl_options, true} makes the transport
%% module ssl from the start and passes the remaining options to
%% ssl:listen/connect; {ssl_options, Opts} keeps gen_tcp and upgrades with
%% Opts once capabilities exchange agreed on Inband-Security-Id 1.
tls_config(Role, O) ->
    case tls_mode(O) of
        none -> [];
        first -> [{ssl_options, true} | ssl_opts(Role, O)];
        inband -> [{ssl_options, ssl_opts(Role, O)}]
    end.

%% Per-transport capabilities: advertise Inband-Security-Id 1 (TLS) only.
tls_caps(O) ->
    case tls_mode(O) of
        inband -> [{capabilities, [{'Inband-Security-Id', [1]}]}];
        _ -> []
    end.

ssl_port(S) ->
    case ssl:sockname(S) of
        {ok, {_, P}} -> {ok, P};
        Other -> Other
    end.

%% After PEER_UP: the negotiated protocol of every ssl socket diameter_tcp
%% registered that was not reported yet.
print_tls(Host) ->
    case tls_mode(persistent_term:get(?MODULE)) of
        none -> ok;
        _ ->
            Socks = [S || {{diameter_tcp, T, {_, S}}, _} <- diameter_reg:match({diameter_tcp, '_', {'_', '_'}}),
                          T /= listener, is_tuple(S), element(1, S) == sslsocket],
            Seen = get_seen(),
            [begin
                 put(tls_seen, [S | get_seen()]),
                 case ssl:connection_information(S, [protocol, selected_cipher_suite]) of
                     {ok, Info} ->
                         say("TLS_UP ~s protocol=~s cipher=~s peer_cert=~s",
                             [Host, proplists:get_value(protocol, Info),
                              cipher_name(proplists:get_value(selected_cipher_suite, Info)),
                              peer_subject(S)]),
                         rearm(Host, S);
                     Err ->
                         say("TLS_UP ~s ~0p", [Host, Err])
                 end
             end || S <- Socks, not lists:member(S, Seen)],
            ok
    end.

%% OTP 25 race (in-band TLS server): diameter_tcp re-arms {active, once} on
%% the TCP socket after the CER, then ssl:handshake/2 copies the socket's
%% active mode into the new ssl socket.  A peer that sends its ClientHello
%% right after the CEA (freeDiameterd does) consumes the active-once before
%% that copy, so the ssl socket starts passive while diameter_tcp believes
%% it is active: nothing is ever read again (no DWA, no requests; the
%% watchdog takes the connection down after 2 Tw).  The ClientHello itself is
%% not lost in that case (gen_tcp:controlling_process/2 forwards it to the
%% ssl connection process).  Re-arm the socket for diameter_tcp (its owner
%% gets the {ssl, ...} messages).
rearm(Host, S) ->
    case ssl:getopts(S, [active]) of
        {ok, [{active, false}]} ->
            ok = ssl:setopts(S, [{active, once}]),
            say("TLS_REARM ~s (OTP left the upgraded socket passive)", [Host]);
        _ ->
            ok
    end.

%% With TLS: a connection that went away before CER/CEA completed, without a
%% TLS alert (freeDiameterd closes the socket without one when it rejects
%% our certificate; with TLS 1.3 that happens after our client handshake
%% has already finished).
print_closed({closed, _Ref, Reason, _Config}) ->
    case tls_mode(persistent_term:get(?MODULE)) of
        none -> ok;
        _ -> say("TLS_CLOSED_BEFORE_UP ~s", [one_line(io_lib:format("~0P", [closed_reason(Reason), 8]))])
    end;
print_closed(_) ->
    ok.

closed_reason({'DOWN', _, process, _, Why}) -> Why;
closed_reason(Why) -> Why.

get_seen() ->
    case get(tls_seen) of undefined -> []; L -> L end.

cipher_name(#{} = Suite) ->
    try ssl:suite_to_str(Suite) catch _:_ -> io_lib:format("~0p", [Suite]) end;
cipher_name(Other) ->
    io_lib:format("~0p", [Other]).

peer_subject(S) ->
    try
        {ok, Der} = ssl:peercert(S),
        Otp = public_key:pkix_decode_cert(Der, otp),
        {rdnSequence, Rdns} = Otp#'OTPCertificate'.tbsCertificate#'OTPTBSCertificate'.subject,
        string:join([attr(A) || Set <- Rdns, A <- Set], ",")
    catch
        _:_ -> "?"
    end.

attr(#'AttributeTypeAndValue'{type = ?'id-at-commonName', value = V}) -> "CN=" ++ str(V);
attr(#'AttributeTypeAndValue'{value = V}) -> str(V).

str({_, V}) when is_list(V) -> V;
str({_, V}) when is_binary(V) -> binary_to_list(V);
str(V) when is_list(V) -> V;
str(V) -> io_lib:format("~0p", [V]).

%% A logger handler that turns OTP's TLS alert reports, and the crash of an
%% in-band upgrade in diameter_tcp, into one stdout line each (sent to the
%% main process, which prints it between its other lines).
install_tls_logger() ->
    Main = self(),
    ok = logger:add_handler(interop_peer_tls, ?MODULE, #{level => notice, config => #{main => Main}}),
    ok.

log(#{msg := {report, #{alert := Alert} = R}}, #{config := #{main := Main}}) ->
    case Alert of
        {alert, 2, Desc, _Where, _Role, _Reason} -> % fatal
            %% With TLS 1.3 a client is in state connection before the
            %% server has checked its certificate, so certificate alerts
            %% (40 handshake_failure, 42-49, 116 certificate_required)
            %% count as handshake failures wherever they come.
            Kind = case maps:get(statename, R, undefined) of
                       connection when not (Desc == 40 orelse (Desc >= 42 andalso Desc =< 49)
                                            orelse Desc == 116) ->
                           "TLS_ALERT";
                       _ ->
                           "TLS_HANDSHAKE_FAILED"
                   end,
            Main ! {tls_log, Kind ++ " " ++ one_line(alert_text(R))};
        _ ->
            ok
    end;
log(#{msg := {report, #{label := {gen_server, terminate}, reason := Reason}}},
    #{config := #{main := Main}}) ->
    case inband_failure(Reason) of
        {true, Why} ->
            Main ! {tls_log, "TLS_HANDSHAKE_FAILED in-band upgrade: " ++ one_line(io_lib:format("~0p", [Why]))};
        false ->
            ok
    end;
log(_, _) ->
    ok.

alert_text(R) ->
    try
        {Fmt, Args} = ssl_logger:format(R),
        io_lib:format(Fmt, Args)
    catch
        _:_ -> io_lib:format("~0p", [R])
    end.

%% diameter_tcp:tls_handshake/3 does {ok, SSock} = ssl:connect|handshake(...).
inband_failure({{badmatch, Why}, Stack}) when is_list(Stack) ->
    case [x || {diameter_tcp, tls_handshake, _, _} <- Stack] of
        [] -> false;
        _ -> {true, Why}
    end;
inband_failure(_) ->
    false.

one_line(Chars) ->
    S = lists:flatten(io_lib:format("~ts", [Chars])),
    string:trim(lists:flatten(string:replace(string:replace(S, "\n", " ", all), "  ", " ", all))).

%% ---------------------------------------------------------------------------
%% diameter callbacks

peer_up(_Svc, _Peer, State) -> State.

peer_down(_Svc, _Peer, State) -> State.

pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer};
pick_peer([], _, _Svc, _State) -> false.

prepare_request(Pkt, _Svc, _Peer) -> {send, Pkt}.

prepare_retransmit(Pkt, _Svc, _Peer) -> {send, Pkt}.

handle_answer(#diameter_packet{msg = Msg, header = Hdr}, _Req, _Svc, _Peer) ->
    case maps:get(answer_details, persistent_term:get(?MODULE), false) of
        true -> {details, Msg, Hdr#diameter_header.is_error};
        false -> Msg
    end.

handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.

handle_request(#diameter_packet{msg = ['CCR' | Req]}, _Svc, {_, Caps}) ->
    O = persistent_term:get(?MODULE),
    #diameter_caps{origin_host = {OH, PeerHost}, origin_realm = {OR, _}} = Caps,
    #{'Session-Id' := SId, 'CC-Request-Type' := Type, 'CC-Request-Number' := Num} = Req,
    RC = maps:get(result_code, O),
    %% Origin-Host, Destination-Realm and the Route-Record list (in order,
    %% comma-separated, "-" when there is none) as the request arrived: what a
    %% relay in between added shows here.
    RR = case maps:get('Route-Record', Req, []) of
             [] -> "-";
             L -> lists:join(",", [binary_to_list(iolist_to_binary(R)) || R <- L])
         end,
    say("REQUEST CCR from=~s session=~s type=~b number=~b origin_host=~s dest_realm=~s route_record=~s",
        [PeerHost, SId, Type, Num, maps:get('Origin-Host', Req), maps:get('Destination-Realm', Req), RR]),
    Mscc = case RC of
               2001 ->
                   [[{'Granted-Service-Unit', [[{'CC-Time', [3600]},
                                                {'CC-Total-Octets', [1 bsl 33]}]]},
                     {'Rating-Group', [100]},
                     {'Validity-Time', [1800]},
                     {'Result-Code', [2001]}]];
               _ ->
                   []
           end,
    Cca = #{'Session-Id' => SId,
            'Result-Code' => RC,
            'Origin-Host' => OH,
            'Origin-Realm' => OR,
            'Auth-Application-Id' => ?APP_ID,
            'CC-Request-Type' => Type,
            'CC-Request-Number' => Num,
            'Multiple-Services-Credit-Control' => Mscc,
            'Proxy-Info' => maps:get('Proxy-Info', Req, [])},
    {reply, ['CCA' | Cca]};
handle_request(#diameter_packet{msg = ['RAR' | Req]}, _Svc, {_, Caps}) ->
    %% A server-initiated request (the client answers it).
    #diameter_caps{origin_host = {OH, PeerHost}, origin_realm = {OR, _}} = Caps,
    #{'Session-Id' := SId} = Req,
    say("REQUEST RAR from=~s session=~s", [PeerHost, SId]),
    {reply, ['RAA' | #{'Session-Id' => SId,
                       'Result-Code' => 2001,
                       'Origin-Host' => OH,
                       'Origin-Realm' => OR}]};
handle_request(_Pkt, _Svc, _Peer) ->
    {answer_message, 3001}.

%% ---------------------------------------------------------------------------
%% gen_event callbacks: forward SIGTERM to the main process

init(Pid) -> {ok, Pid}.

handle_event(sigterm, Pid) ->
    Pid ! sigterm,
    {ok, Pid};
handle_event(_, Pid) ->
    {ok, Pid}.

handle_call(_, Pid) -> {ok, ok, Pid}.

handle_info(_, Pid) -> {ok, Pid}.

terminate(_, _) -> ok.

code_change(_, Pid, _) -> {ok, Pid}.
