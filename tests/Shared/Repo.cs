namespace Forensics.Tests;

/// <summary>Paths in the repository the tests run from.</summary>
public static class Repo
{
    public static string Root
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(System.IO.Path.Combine(d.FullName, "Forensics.sln")))
                    return d.FullName;
            throw new InvalidOperationException("Forensics.sln not found above " + AppContext.BaseDirectory);
        }
    }

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);
}
