"""An SDP offer as a browser's widget sends it with ``POST /sessions``: one send-and-receive audio section and the
``events`` data channel, with no candidates of its own (the media server learns the address from ICE checks). Made
by aiortc once and kept as text, so the HTTP-level tests need no peer connection of their own."""

# What both sections share: no candidates of their own, the ICE credentials and the DTLS fingerprint (bundled).
TRANSPORT = (
    "a=end-of-candidates\r\n"
    "a=ice-ufrag:FD59\r\n"
    "a=ice-pwd:8xCG10n5dvj3wHJIReDxRp\r\n"
    "a=fingerprint:sha-256 "
    "EA:13:48:1C:7E:D1:EC:E2:C0:AB:1C:C5:41:E9:86:E6:16:8B:58:B5:35:36:5E:E4:04:97:F2:E6:93:EC:57:27\r\n"
    "a=setup:actpass\r\n"
)

OFFER = (
    "v=0\r\n"
    "o=- 4005181653 4005181653 IN IP4 0.0.0.0\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=group:BUNDLE 0 1\r\n"
    "a=msid-semantic:WMS *\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 96 9 0 8\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=sendrecv\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=mid:0\r\n"
    "a=msid:183f000a-c348-4c9a-95ad-96617ba3376a 67477f57-34f0-4791-9984-e1ecf47e92d7\r\n"
    "a=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=rtcp-mux\r\n"
    "a=ssrc:2440593261 cname:8a2a7985-57fd-4ea3-9128-e6fc177a6695\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n" + TRANSPORT + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=mid:1\r\n"
    "a=sctp-port:5000\r\n"
    "a=max-message-size:262144\r\n" + TRANSPORT
)
