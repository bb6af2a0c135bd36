#!/bin/bash
# haproxy's external check for the controller's PING health monitor (the path is hard-coded in
# the controller's haproxy template).
if [[ $HAPROXY_SERVER_ADDR =~ ":" ]]; then
    /usr/bin/ping -6 -q -n -w 1 -c 1 $HAPROXY_SERVER_ADDR > /dev/null 2>&1
else
    /usr/bin/ping -q -n -w 1 -c 1 $HAPROXY_SERVER_ADDR > /dev/null 2>&1
fi
