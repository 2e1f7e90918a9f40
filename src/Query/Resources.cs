namespace Forensics.Query;

/// <summary>Text resources embedded in this assembly (SQL, reference tables).</summary>
internal static class Resources
{
    public static string Text(string name)
    {
        using var s = typeof(Resources).Assembly.GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"resource {name} missing");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }
}
