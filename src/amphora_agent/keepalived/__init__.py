"""keepalived: VRRP (active-standby) and LVS (UDP/SCTP listeners), their config texts and topology."""
