using System.Globalization;

namespace Forensics.Cli;

/// <summary>Parsers for option values users type: durations (30s, 10m, 1h) and sizes (64K, 16M).</summary>
public static class Args
{
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
            _ => (t, 1),
        };
        if (!double.TryParse(num, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || v <= 0 || double.IsInfinity(v))
            throw new FormatException($"'{text}' is not a duration (e.g. 30s, 10m, 1h)");
        return TimeSpan.FromSeconds(v * scale);
    }

    public static ulong ParseSize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var t = text.Trim().ToUpperInvariant().TrimEnd('B').TrimEnd('I');
        (string num, ulong scale) = t switch
        {
            _ when t.EndsWith('K') => (t[..^1], 1UL << 10),
            _ when t.EndsWith('M') => (t[..^1], 1UL << 20),
            _ when t.EndsWith('G') => (t[..^1], 1UL << 30),
            _ => (t, 1UL),
        };
        if (!ulong.TryParse(num, NumberStyles.None, CultureInfo.InvariantCulture, out var v) || v == 0)
            throw new FormatException($"'{text}' is not a size (e.g. 4096, 64K, 16M)");
        return checked(v * scale);
    }
}
