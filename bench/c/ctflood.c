// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * New conntrack entries at a paced rate, for the conntrack ingest benchmark
 * (bench/run.sh conntrack): one UDP datagram per new 5-tuple (SOCKETS unbound
 * sockets, each cycling the destination port 1..65535), so every datagram the
 * kernel accepts is a new entry and a NFNLGRP_CONNTRACK_NEW event. A send that
 * netfilter refuses fails (EPERM) and is counted apart. Bounded in time.
 *
 *   ctflood DST_IP RATE SECONDS [SOCKETS]     RATE 0 = as fast as it can
 *
 * Prints one line of key=value results on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_SOCKETS 64

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static struct sockaddr_in dst[BATCH];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	unsigned long long made = 0, refused = 0, calls = 0;
	int fds[MAX_SOCKETS], nsock, port = 1, sock = 0, i;
	double rate, seconds, t0, t;
	char payload = 'x';
	struct in_addr ip;

	if (argc < 4 || inet_pton(AF_INET, argv[1], &ip) != 1) {
		fprintf(stderr, "usage: ctflood DST_IP RATE SECONDS [SOCKETS]\n");
		return 2;
	}
	rate = atof(argv[2]);
	seconds = atof(argv[3]);
	nsock = argc > 4 ? atoi(argv[4]) : 8;
	if (nsock < 1 || nsock > MAX_SOCKETS || seconds <= 0 || seconds > 600)
		return 2;
	for (i = 0; i < nsock; i++) {
		fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
		if (fds[i] < 0) {
			perror("socket");
			return 1;
		}
	}
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		dst[i].sin_family = AF_INET;
		dst[i].sin_addr = ip;
		iov[i].iov_base = &payload;
		iov[i].iov_len = 1;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &dst[i];
		msgs[i].msg_hdr.msg_namelen = sizeof(dst[i]);
	}
	t0 = now();
	while ((t = now() - t0) < seconds) {
		long n = BATCH;
		int r;

		if (rate > 0) {
			double due = rate * t - (double)(made + refused);

			if (due < 1) {
				struct timespec ts = { 0, 50000 };	/* 50 us */
				nanosleep(&ts, NULL);
				continue;
			}
			if (due < n)
				n = (long)due;
		}
		/* one socket per batch: n new destination ports of it */
		for (i = 0; i < n; i++) {
			dst[i].sin_port = htons(port);
			if (++port > 65535)
				port = 1;
		}
		r = sendmmsg(fds[sock], msgs, n, 0);
		calls++;
		if (r < 0) {
			if (errno != EPERM && errno != ENOBUFS && errno != EAGAIN) {
				perror("sendmmsg");
				return 1;
			}
			refused++;	/* the first datagram of the batch was refused; the rest are retried */
			continue;
		}
		made += r;
		if (port < BATCH)	/* the ports wrapped: the next socket (a new source port) */
			sock = (sock + 1) % nsock;
	}
	t = now() - t0;
	printf("made=%llu refused=%llu seconds=%.3f rate=%.0f calls=%llu\n", made, refused, t, made / t, calls);
	for (i = 0; i < nsock; i++)
		close(fds[i]);
	return 0;
}
