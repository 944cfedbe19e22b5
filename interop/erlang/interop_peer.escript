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
%%         request, "PEER_UP/PEER_DOWN <host>" on connection events.  Runs until
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
%%
%% Everything is bounded: the client gives up after 15 s without a peer.
-module(interop_peer).
-mode(compile).

-include_lib("diameter/include/diameter.hrl").

-export([main/1]).
%% diameter application callbacks
-export([peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).
%% gen_event callbacks (SIGTERM handler installed in erl_signal_server)
-export([init/1, handle_event/2, handle_call/2, handle_info/2, terminate/2, code_change/3]).
%% watchdog timer callback
-export([tw_value/1]).

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
    load_dict(),
    ok = diameter:start(),
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
                                                       {transport_config, [{reuseaddr, true},
                                                                           {ip, Addr},
                                                                           {port, Port}]},
                                                       {watchdog_timer, watchdog(Tw)}]}),
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
            {ok, P} = inet:port(S),
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
        sigterm -> sigterm;
        stop_requested -> stdin;
        lifetime_exceeded -> max_seconds
    end.

print_event(Info) when is_tuple(Info) ->
    case element(1, Info) of
        up -> say("PEER_UP ~s", [peer_host(Info)]);
        down -> say("PEER_DOWN ~s", [peer_host(Info)]);
        _ -> ok
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
                                                        {transport_config, [{reuseaddr, true},
                                                                            {ip, Addr},
                                                                            {raddr, Addr},
                                                                            {rport, Port}]},
                                                        {connect_timer, 1000},
                                                        {watchdog_timer, watchdog(Tw)}]}),
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
        #diameter_event{service = ?SVC} ->
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
        [_Name | Ans] when is_map(Ans) ->
            RC = result_code(Ans),
            say("ANSWER ~b ~p", [I, RC]),
            RC;
        Other ->
            say("ERROR ~b ~0p", [I, Other]),
            error
    end.

result_code(#{'Result-Code' := [RC]}) -> RC;
result_code(#{'Result-Code' := RC}) when is_integer(RC) -> RC;
result_code(#{'Experimental-Result' := [ER | _]}) ->
    case ER of
        #{'Experimental-Result-Code' := C} -> C;
        _ -> experimental
    end;
result_code(_) -> none.

%% ---------------------------------------------------------------------------
%% diameter callbacks

peer_up(_Svc, _Peer, State) -> State.

peer_down(_Svc, _Peer, State) -> State.

pick_peer([Peer | _], _, _Svc, _State) -> {ok, Peer};
pick_peer([], _, _Svc, _State) -> false.

prepare_request(Pkt, _Svc, _Peer) -> {send, Pkt}.

prepare_retransmit(Pkt, _Svc, _Peer) -> {send, Pkt}.

handle_answer(#diameter_packet{msg = Msg}, _Req, _Svc, _Peer) -> Msg.

handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.

handle_request(#diameter_packet{msg = ['CCR' | Req]}, _Svc, {_, Caps}) ->
    O = persistent_term:get(?MODULE),
    #diameter_caps{origin_host = {OH, PeerHost}, origin_realm = {OR, _}} = Caps,
    #{'Session-Id' := SId, 'CC-Request-Type' := Type, 'CC-Request-Number' := Num} = Req,
    RC = maps:get(result_code, O),
    say("REQUEST CCR from=~s session=~s type=~b number=~b", [PeerHost, SId, Type, Num]),
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
