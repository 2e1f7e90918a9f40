namespace Forensics.Query.Recording;

/// <summary>A recording that cannot be opened or read as asked; the message is one line for the user.</summary>
public sealed class RecordingException : Exception
{
    public RecordingException(string message) : base(message) { }
    public RecordingException() { }
    public RecordingException(string message, Exception inner) : base(message, inner) { }
}
