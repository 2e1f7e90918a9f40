using System.Globalization;

namespace Forensics.Cli;

/// <summary>Parsers for option values users type: durations (30s, 10m, 1h, 2d) and sizes (64K, 16M).</summary>
public static class Args
{
    /// <summary>The longest duration a timer takes (CancellationTokenSource.CancelAfter: 2^32-2 ms, about 49.7 days).</summary>
    public static readonly TimeSpan MaxDuration = TimeSpan.FromDays(49);

    public static TimeSpan ParseDuration(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var t = text.Trim().ToLowerInvariant();
        (string num, double scale) = t switch
        {
            _ when t.EndsWith("ms", StringComparison.Ordinal) => (t[..^2], 0.001),
            _ when t.EndsWith('s') => (t[..^1], 1),
            _ when t.EndsWith('m') => (t[..^1], 60),
            _ when t.EndsWith('h') => (t[..^1], 3600),
            _ when t.EndsWith('d') => (t[..^1], 86400),
            _ => (t, 1),
        };
        if (!double.TryParse(num, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var v) || !(v > 0) || double.IsInfinity(v))
            throw new FormatException($"'{text}' is not a duration (e.g. 30s, 10m, 1h)");
        var seconds = v * scale;
        if (seconds < 0.001)
            throw new FormatException($"'{text}' is shorter than a millisecond");
        if (seconds > MaxDuration.TotalSeconds)
            throw new FormatException($"'{text}' is longer than the longest duration, {MaxDuration.TotalDays:0} days");
        return TimeSpan.FromSeconds(seconds);
    }

    public static ulong ParseSize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var t = text.Trim().ToUpperInvariant();
        if (t.EndsWith("IB", StringComparison.Ordinal))
            t = t[..^2];
        else if (t.EndsWith('B'))
            t = t[..^1];
        (string num, ulong scale) = t switch
        {
            _ when t.EndsWith('K') => (t[..^1], 1UL << 10),
            _ when t.EndsWith('M') => (t[..^1], 1UL << 20),
            _ when t.EndsWith('G') => (t[..^1], 1UL << 30),
            _ when t.EndsWith('T') => (t[..^1], 1UL << 40),
            _ => (t, 1UL),
        };
        if (!ulong.TryParse(num, NumberStyles.None, CultureInfo.InvariantCulture, out var v))
            throw new FormatException($"'{text}' is not a size (e.g. 4096, 64K, 16M, 2G)");
        if (v > ulong.MaxValue / scale)
            throw new FormatException($"'{text}' is too large");
        return v * scale;
    }

    /// <summary>A duration as users write it: 5m, 30s, 1h, 1.5s.</summary>
    public static string FormatDuration(TimeSpan t) => t.TotalSeconds switch
    {
        var s when s % 86400 == 0 => $"{s / 86400}d",
        var s when s % 3600 == 0 => $"{s / 3600}h",
        var s when s % 60 == 0 => $"{s / 60}m",
        var s when s >= 1 => string.Create(CultureInfo.InvariantCulture, $"{s:0.###}s"),
        var s => string.Create(CultureInfo.InvariantCulture, $"{s * 1000:0.###}ms"),
    };

    /// <summary>A size as users write it: 4K, 16M, 2G when exact, else bytes.</summary>
    public static string FormatSize(ulong v) => v switch
    {
        0 => "0",
        _ when v % (1UL << 40) == 0 => $"{v >> 40}T",
        _ when v % (1UL << 30) == 0 => $"{v >> 30}G",
        _ when v % (1UL << 20) == 0 => $"{v >> 20}M",
        _ when v % (1UL << 10) == 0 => $"{v >> 10}K",
        _ => v.ToString(CultureInfo.InvariantCulture),
    };
}
