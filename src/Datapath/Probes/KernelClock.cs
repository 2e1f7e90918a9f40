using System.Runtime.InteropServices;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Probes;

/// <summary>
/// The one reader of the kernel clocks (recorder, probes, seeding from /proc). The kernel clocks the probes stamp with: CLOCK_MONOTONIC (every event's
/// header, bpf_ktime_get_ns) and CLOCK_BOOTTIME (exec ids and process start
/// times, bpf_ktime_get_boot_ns; /proc start times). They differ by the time
/// the machine spent suspended.
/// </summary>
public static unsafe class KernelClock
{
    private static ulong Now(int clock)
    {
        Timespec ts;
        if (LibC.clock_gettime(clock, &ts) != 0)
            throw new InvalidOperationException($"clock_gettime({clock}) failed: errno {Marshal.GetLastPInvokeError()}");
        return (ulong)ts.tv_sec * 1_000_000_000UL + (ulong)ts.tv_nsec;
    }

    /// <summary>CLOCK_MONOTONIC now, in ns: the clock of event headers (ktime).</summary>
    public static ulong MonotonicNs() => Now(LibC.CLOCK_MONOTONIC);

    /// <summary>CLOCK_BOOTTIME now, in ns: the clock of exec ids and process start times.</summary>
    public static ulong BoottimeNs() => Now(LibC.CLOCK_BOOTTIME);

    /// <summary>
    /// UTC ns minus CLOCK_MONOTONIC ns and minus CLOCK_BOOTTIME ns, measured once: the best of 16 back-to-back
    /// reads (the pair of monotonic reads closest together brackets the realtime read best).
    /// </summary>
    public static (long Monotonic, long Boottime) UtcOffsets()
    {
        long bestSpan = long.MaxValue, mono = 0, boot = 0;
        for (int i = 0; i < 16; i++)
        {
            long m1 = (long)Now(LibC.CLOCK_MONOTONIC), b1 = (long)Now(LibC.CLOCK_BOOTTIME), r = (long)Now(LibC.CLOCK_REALTIME), m2 = (long)Now(LibC.CLOCK_MONOTONIC);
            if (m2 - m1 < bestSpan)
            {
                bestSpan = m2 - m1;
                mono = r - m1;
                boot = r - b1;
            }
        }
        return (mono, boot);
    }
}
