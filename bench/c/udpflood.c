// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A paced small-packet UDP sender and a counting receiver, for the capture
 * benchmark (bench/run.sh capture). Every run is bounded in time.
 *
 *   udpflood send DST_IP PORT PPS SECONDS [PAYLOAD]   PPS 0 = as fast as it can
 *   udpflood recv BIND_IP PORT SECONDS                 stops SECONDS after start, or 1 s after traffic stops
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

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int do_send(const char *ip, int port, double pps, double seconds, int payload)
{
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(port) };
	static char buf[BATCH][2048];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	unsigned long long sent = 0, errors = 0, calls = 0;
	double t0, t;
	int fd, i;

	if (payload < 1 || payload > 2048 || inet_pton(AF_INET, ip, &dst.sin_addr) != 1)
		return 2;
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
		perror("socket/connect");
		return 1;
	}
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		memset(buf[i], 'x', payload);
		iov[i].iov_base = buf[i];
		iov[i].iov_len = payload;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	t0 = now();
	while ((t = now() - t0) < seconds) {
		long n = BATCH;
		int r;

		if (pps > 0) {
			double due = pps * t - (double)(sent + errors);

			if (due < 1) {
				struct timespec ts = { 0, 50000 };	/* 50 us */
				nanosleep(&ts, NULL);
				continue;
			}
			if (due < n)
				n = (long)due;
		}
		for (i = 0; i < n; i++)
			memcpy(buf[i], &sent, sizeof(sent));	/* a sequence number, for whoever looks */
		r = sendmmsg(fd, msgs, n, 0);
		calls++;
		if (r < 0) {
			if (errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED) {
				perror("sendmmsg");
				return 1;
			}
			errors++;	/* one packet that did not go out */
			continue;
		}
		sent += r;
	}
	t = now() - t0;
	printf("sent=%llu send_errors=%llu seconds=%.3f pps=%.0f calls=%llu\n", sent, errors, t, sent / t, calls);
	close(fd);
	return 0;
}

static int do_recv(const char *ip, int port, double seconds)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	static char buf[BATCH][2048];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	unsigned long long got = 0;
	double t0, first = 0, last = 0;
	int fd, i, size = 32 << 20;
	struct timeval tv = { 0, 100000 };

	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1)
		return 2;
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("socket/bind");
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		iov[i].iov_base = buf[i];
		iov[i].iov_len = sizeof(buf[i]);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	printf("ready\n");
	fflush(stdout);
	t0 = now();
	while (now() - t0 < seconds) {
		int r = recvmmsg(fd, msgs, BATCH, 0, NULL);

		if (r > 0) {
			if (!got)
				first = now();
			got += r;
			last = now();
		} else if (got && now() - last > 1.0) {
			break;
		}
	}
	printf("received=%llu seconds=%.3f\n", got, got ? last - first : 0);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 6 && !strcmp(argv[1], "send"))
		return do_send(argv[2], atoi(argv[3]), atof(argv[4]), atof(argv[5]), argc > 6 ? atoi(argv[6]) : 64);
	if (argc >= 5 && !strcmp(argv[1], "recv"))
		return do_recv(argv[2], atoi(argv[3]), atof(argv[4]));
	fprintf(stderr, "usage: udpflood send DST_IP PORT PPS SECONDS [PAYLOAD] | recv BIND_IP PORT SECONDS\n");
	return 2;
}
